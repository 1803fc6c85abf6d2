"""`RationaleRefiner`: PPO fine-tuning of the seq2seq student's rationales against a reward."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgcot.distill.datamodule import pad_to_multiple
from lmgcot.rl.kl import AdaptiveKLController, FixedKLController, kl_estimate
from lmgcot.rl.ppo_math import (
    RunningMeanStd,
    clip_scores,
    entropy_from_logits,
    gae,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    normalize_scores,
    policy_loss,
    token_rewards,
    value_loss,
)
from lmgcot.rl.value_head import ValueHead, policy_with_value

# (batch, rationales, token_logprobs) -> {component: per-sample scores (None: missing), ...,
# "total": per-sample terminal rewards}. `token_logprobs` are the reference model's untempered
# log-probs of each rationale's tokens (for the fluency aspect).
RewardFn = Callable[[dict[str, Any], list[str], list[list[float]]], dict[str, list]]
# (rollout number, rows of {"input", "rationale", reward components..., "total"}) -> None
SampleLogger = Callable[[int, list[dict[str, Any]]], None]
KLController = FixedKLController | AdaptiveKLController
SCORE_NORMS = ("none", "running", "group")

# Responses are right-padded to a multiple of this, so few distinct shapes reach the model.
RESPONSE_PAD_MULTIPLE = 8
GRADIENT_CLIP = 1.0


class RationaleRefiner(pl.LightningModule):
    """PPO (clipped surrogate + clipped value loss, per-token KL penalty to a frozen reference)
    over rationales sampled from an encoder-decoder student, with manual optimisation: each
    `training_step` is one rollout followed by `ppo_epochs` passes of minibatch updates.

    Memory: the reference is a full deep copy of the initial student (weights only: no gradients,
    no optimiser state, always in eval mode), i.e. ~1x the policy's weights on top of the policy's
    ~4x (weights, gradients, two Adam moments). It is a registered submodule, so it moves with the
    module and is saved in checkpoints: a resumed run keeps penalising drift from the *original*
    student rather than from whatever policy the checkpoint holds.

    Dropout is switched off for the whole step (generation, rollout scoring and updates), so the
    PPO ratio compares the same deterministic function before and after each update.

    Note: under manual optimisation Lightning's `global_step` (and so `Trainer(max_steps=...)`)
    counts optimiser steps, i.e. `ppo_epochs * ceil(batch / minibatch_size)` per training step.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        reward_fn: RewardFn,
        optimizer: Callable[..., torch.optim.Optimizer],
        kl_controller: KLController,
        kl_estimator: str = "k1",
        gamma: float = 1.0,
        lam: float = 0.95,
        clip_range: float = 0.2,
        clip_range_value: float | None = 0.2,
        vf_coef: float = 0.5,
        ppo_epochs: int = 4,
        minibatch_size: int = 8,
        max_new_tokens: int = 32,
        whiten_advantages: bool = True,
        score_clip: float | None = None,
        temperature: float = 1.0,
        max_source_length: int | None = None,
        score_norm: str = "none",
        value_head_mlp: int | None = None,
        sample_logger: SampleLogger | None = None,
        log_samples_every: int = 0,
        num_samples_logged: int = 8,
    ):
        """
        Args:
            model: the student policy (a T5-style encoder-decoder); it is trained in place.
            tokenizer: the student's tokenizer (needs pad and EOS ids).
            reward_fn: (batch, rationales, token_logprobs) -> {component name: per-sample scores
                (None where missing), ..., "total": per-sample scores}; "total" is the terminal
                PPO reward, the rest are only logged. `batch` is the dataloader's batch (it has
                "inputs", the prompts, and whatever else the caller put there, e.g. example
                indices); `token_logprobs` are the frozen reference's untempered log-probs of each
                rationale's tokens.
            optimizer: partial taking the parameters (policy + value head) and returning an
                optimiser.
            kl_controller: gives the KL penalty coefficient and is updated with the observed KL.
            kl_estimator: per-token KL estimator for the penalty: "k1", "k3" or "abs".
            gamma: discount factor over response tokens, in [0, 1].
            lam: GAE lambda in [0, 1] (bias/variance trade-off of the advantages).
            clip_range: PPO ratio clip epsilon (> 0).
            clip_range_value: value-prediction clip around the rollout values (None: no clip).
            vf_coef: weight of the value loss in the summed loss.
            ppo_epochs: passes over each rollout batch (>= 1).
            minibatch_size: rollouts per optimiser step (>= 1).
            max_new_tokens: longest sampled rationale, in tokens (truncated ones have no EOS).
            whiten_advantages: standardise advantages over the batch's real tokens.
            score_clip: clamp the total reward to [-score_clip, score_clip] (None: no clamp).
            temperature: sampling temperature (> 0); log-probs use the same tempered logits.
            max_source_length: truncate encoded inputs to this many tokens (None: no limit).
            score_norm: "none"; "running" (standardise scores by their running mean and std,
                checkpointed); "group" (subtract the mean score of the samples drawn for the same
                prompt in this rollout, for batches that repeat each prompt: a per-prompt
                baseline; `batch["group"]` names the prompt, else the prompt text does).
            value_head_mlp: hidden width of the value head's one ReLU layer (None: linear).
            sample_logger: called every `log_samples_every` rollouts with sample rationales and
                their rewards (a table for the loggers).
            log_samples_every: rollouts between sample tables (0: never).
            num_samples_logged: rows per sample table.
        """
        super().__init__()
        if ppo_epochs < 1 or minibatch_size < 1 or max_new_tokens < 1:
            raise ValueError(
                f"ppo_epochs={ppo_epochs}, minibatch_size={minibatch_size} and "
                f"max_new_tokens={max_new_tokens} must be >= 1"
            )
        if not temperature > 0:
            raise ValueError(f"rl.temperature={temperature}: must be > 0")
        if score_norm not in SCORE_NORMS:
            raise ValueError(
                f"rl.score_norm={score_norm!r}: allowed values are {list(SCORE_NORMS)}"
            )
        self.automatic_optimization = False
        self.model = model
        self.ref_model = copy.deepcopy(model).eval()
        self.ref_model.requires_grad_(False)
        self.value_head = ValueHead(model.config.d_model, value_head_mlp)
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.optimizer_factory = optimizer
        self.kl_controller = kl_controller
        self.kl_estimator = kl_estimator
        self.gamma, self.lam = gamma, lam
        self.clip_range, self.clip_range_value = clip_range, clip_range_value
        self.vf_coef = vf_coef
        self.ppo_epochs, self.minibatch_size = ppo_epochs, minibatch_size
        self.max_new_tokens = max_new_tokens
        self.whiten_advantages = whiten_advantages
        self.score_clip = score_clip
        self.temperature = temperature
        self.max_source_length = max_source_length
        self.score_norm = score_norm
        self.score_stats = RunningMeanStd()
        self.sample_logger = sample_logger
        self.log_samples_every = int(log_samples_every)
        self.num_samples_logged = int(num_samples_logged)
        self.rollouts_done = 0
        # One entry per val evaluation: {"rollouts", "reward", "scores" (per question, in val
        # order)}, so that the export can compare policies question by question (rl.selection).
        self.val_history: list[dict[str, Any]] = []
        self._val_scores: list[float] = []

    # ---------------------------------------------------------------- helpers

    def encode(self, inputs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise the prompts: (input_ids, attention_mask), each (batch, S) on this device."""
        enc = self.tokenizer(
            inputs,
            padding=True,
            truncation=self.max_source_length is not None,
            max_length=self.max_source_length,
            return_tensors="pt",
        )
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, greedy: bool = False
    ) -> list[list[int]]:
        """One response per prompt: sampled from the untruncated (tempered) policy distribution,
        or greedy (for validation).

        Returns each response's tokens without the decoder start token, cut after its first EOS
        (kept); a response without EOS was truncated at `max_new_tokens`.
        """
        sampling = (
            {"do_sample": False}
            if greedy
            else {
                "do_sample": True,
                "top_k": 0,
                "top_p": 1.0,
                "temperature": self.temperature,
            }
        )
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=self.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            decoder_start_token_id=self.model.config.decoder_start_token_id,
            **sampling,
        )
        eos = self.tokenizer.eos_token_id
        responses = []
        for row in out[:, 1:].tolist():
            responses.append(row[: row.index(eos) + 1] if eos in row else row)
        return responses

    def _forward(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        response_mask: torch.Tensor,
        value_head: ValueHead | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tempered logits (batch, T, V) and, with a value head, values (batch, T)."""
        if value_head is None:
            logits = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                decoder_attention_mask=response_mask.long(),
                use_cache=False,
            ).logits
            values = None
        else:
            logits, values = policy_with_value(
                model,
                input_ids,
                attention_mask,
                decoder_input_ids,
                response_mask.long(),
                value_head=value_head,
            )
        return logits / self.temperature, values

    # ---------------------------------------------------------------- PPO step

    def _rollout_tensors(
        self, responses: list[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lengths, response_ids, mask, decoder_input_ids) for a batch of sampled responses."""
        n = len(responses)
        lengths = torch.tensor([len(r) for r in responses], device=self.device)
        pad = self.tokenizer.pad_token_id
        response_ids = pad_to_multiple(responses, pad, RESPONSE_PAD_MULTIPLE).to(self.device)
        width = response_ids.shape[1]
        mask = (torch.arange(width, device=self.device)[None, :] < lengths[:, None]).float()
        start = torch.full((n, 1), self.model.config.decoder_start_token_id, device=self.device)
        decoder_input_ids = torch.cat([start, response_ids[:, :-1]], dim=1)
        return lengths, response_ids, mask, decoder_input_ids

    def _decode(self, responses: list[list[int]]) -> list[str]:
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return [t.strip() for t in texts]

    @staticmethod
    def _per_row(values: torch.Tensor, mask: torch.Tensor) -> list[list[float]]:
        return [row[: int(m.sum())].tolist() for row, m in zip(values, mask)]

    def _normalise(self, scores: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        if self.score_norm == "running":
            self.score_stats.update(scores)
            return normalize_scores(scores, self.score_stats)
        if self.score_norm == "group":
            groups = list(batch.get("group", batch["inputs"]))
            keys = {g: i for i, g in enumerate(dict.fromkeys(groups))}
            ids = torch.tensor([keys[g] for g in groups], device=scores.device)
            sums = torch.zeros(len(keys), device=scores.device).index_add(0, ids, scores)
            counts = torch.zeros(len(keys), device=scores.device).index_add(
                0, ids, torch.ones_like(scores)
            )
            return scores - (sums / counts)[ids]
        return scores

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        inputs: list[str] = list(batch["inputs"])
        n = len(inputs)
        # Dropout off throughout: see the class docstring.
        self.model.eval()
        self.value_head.eval()
        self.ref_model.eval()
        input_ids, attention_mask = self.encode(inputs)

        # 1. Generate: one sampled rationale per prompt.
        responses = self.generate(input_ids, attention_mask)
        lengths, response_ids, mask, decoder_input_ids = self._rollout_tensors(responses)

        # 2. Rollout log-probs and values of the policy; log-probs of the frozen reference.
        with torch.no_grad():
            logits, old_values = self._forward(
                self.model, input_ids, attention_mask, decoder_input_ids, mask, self.value_head
            )
            old_logprobs = logprobs_from_logits(logits, response_ids)
            entropy = entropy_from_logits(logits, mask)
            ref_logits, _ = self._forward(
                self.ref_model, input_ids, attention_mask, decoder_input_ids, mask, None
            )
            ref_logprobs = logprobs_from_logits(ref_logits, response_ids)
            plain_ref = (
                ref_logprobs
                if self.temperature == 1.0
                else logprobs_from_logits(ref_logits * self.temperature, response_ids)
            )

        # 3. Score the decoded rationales.
        rationales = self._decode(responses)
        rewards = self.reward_fn(batch, rationales, self._per_row(plain_ref, mask))
        if "total" not in rewards:
            raise KeyError(f"reward_fn must return a 'total' entry (got {sorted(rewards)})")
        raw_scores = torch.tensor(rewards["total"], dtype=torch.float32, device=self.device)
        scores = clip_scores(self._normalise(raw_scores, batch), self.score_clip)

        with torch.no_grad():
            # 4. Per-token KL penalty plus the terminal score.
            kl = kl_estimate(old_logprobs, ref_logprobs, self.kl_estimator) * mask
            sequence_kl = kl.sum(dim=1).mean()
            kl_coef = self.kl_controller.value
            per_token_rewards = token_rewards(scores, kl, mask, kl_coef)

            # 5. Advantages and value targets.
            advantages, returns = gae(per_token_rewards, old_values, mask, self.gamma, self.lam)
            if self.whiten_advantages:
                advantages = masked_whiten(advantages, mask)

        # 6. PPO epochs over shuffled minibatches.
        optimizer = self.optimizers()
        stats: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("policy_loss", "value_loss", "clipfrac", "approx_kl")
        }
        for _ in range(self.ppo_epochs):
            order = torch.randperm(n, device=self.device)
            for idx in order.split(self.minibatch_size):
                mb_logits, mb_values = self._forward(
                    self.model,
                    input_ids[idx],
                    attention_mask[idx],
                    decoder_input_ids[idx],
                    mask[idx],
                    self.value_head,
                )
                mb_logprobs = logprobs_from_logits(mb_logits, response_ids[idx])
                p_loss, clipfrac, approx_kl = policy_loss(
                    mb_logprobs, old_logprobs[idx], advantages[idx], mask[idx], self.clip_range
                )
                v_loss, _ = value_loss(
                    mb_values, old_values[idx], returns[idx], mask[idx], self.clip_range_value
                )
                loss = p_loss + self.vf_coef * v_loss
                optimizer.zero_grad()
                self.manual_backward(loss)
                self.clip_gradients(
                    optimizer, gradient_clip_val=GRADIENT_CLIP, gradient_clip_algorithm="norm"
                )
                optimizer.step()
                for key, value in zip(stats, (p_loss, v_loss, clipfrac, approx_kl), strict=True):
                    stats[key].append(value.detach())

        self.kl_controller.update(sequence_kl.item(), n_steps=n)

        log = {
            "rl/kl": sequence_kl,
            "rl/kl_coef": kl_coef,
            "rl/entropy": entropy,
            "rl/response_length": masked_mean(lengths.float(), torch.ones_like(mask[:, 0])),
            **{f"rl/{k}": torch.stack(v).mean() for k, v in stats.items()},
        }
        log.update(_reward_means(rewards, "rewards/{}/mean"))
        self.log_dict(log, on_step=True, on_epoch=False, batch_size=n)
        self.rollouts_done += 1
        if (
            self.sample_logger is not None
            and self.log_samples_every > 0
            and (self.rollouts_done - 1) % self.log_samples_every == 0
        ):
            rows = []
            for i in range(min(n, self.num_samples_logged)):
                row = {"input": batch.get("questions", inputs)[i], "rationale": rationales[i]}
                row.update({name: values[i] for name, values in rewards.items()})
                rows.append(row)
            self.sample_logger(self.rollouts_done, rows)

    # ---------------------------------------------------------------- validation

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Greedy rationales for held-out prompts, scored by the same reward: `val/reward` (the
        total) and `val/<component>`, averaged over the validation set."""
        inputs: list[str] = list(batch["inputs"])
        input_ids, attention_mask = self.encode(inputs)
        responses = self.generate(input_ids, attention_mask, greedy=True)
        _, response_ids, mask, decoder_input_ids = self._rollout_tensors(responses)
        ref_logits, _ = self._forward(
            self.ref_model, input_ids, attention_mask, decoder_input_ids, mask, None
        )
        ref_logprobs = logprobs_from_logits(ref_logits * self.temperature, response_ids)
        rewards = self.reward_fn(batch, self._decode(responses), self._per_row(ref_logprobs, mask))
        self._val_scores.extend(float(x) for x in rewards["total"])
        log = _reward_means(rewards, "val/{}")
        log["val/reward"] = log.pop("val/total")
        self.log_dict(log, on_step=False, on_epoch=True, batch_size=len(inputs))

    def on_validation_epoch_start(self) -> None:
        self._val_scores = []

    def on_validation_epoch_end(self) -> None:
        if self._val_scores and not self.trainer.sanity_checking:
            scores = self._val_scores
            self.val_history.append(
                {
                    "rollouts": self.rollouts_done,
                    "reward": sum(scores) / len(scores),
                    "scores": scores,
                }
            )
        self._val_scores = []

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = list(self.model.parameters()) + list(self.value_head.parameters())
        return self.optimizer_factory(params)

    # ---------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["kl_controller"] = self.kl_controller.state_dict()
        checkpoint["score_stats"] = self.score_stats.state_dict()
        checkpoint["rollouts_done"] = self.rollouts_done
        checkpoint["val_history"] = self.val_history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "kl_controller" in checkpoint:
            self.kl_controller.load_state_dict(checkpoint["kl_controller"])
        if "score_stats" in checkpoint:
            self.score_stats.load_state_dict(checkpoint["score_stats"])
        self.rollouts_done = int(checkpoint.get("rollouts_done", 0))
        self.val_history = list(checkpoint.get("val_history", []))


def _reward_means(rewards: dict[str, list], template: str) -> dict[str, float]:
    """Mean of every reward component over the samples that have a value (None: missing)."""
    out = {}
    for name, values in rewards.items():
        present = [float(v) for v in values if v is not None]
        if present:
            out[template.format(name)] = sum(present) / len(present)
    return out
