"""`RationaleRefiner`: RL fine-tuning of the seq2seq student's rationales against a reward: PPO with
a value head, or a critic-free estimator (RLOO, GRPO, REINFORCE) over k samples per question."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput

from lmgcot.rl.kl import AdaptiveKLController, FixedKLController, kl_estimate
from lmgcot.rl.policy_gradient import (
    ALGORITHMS,
    GROUP_BASELINES,
    GRPO_SCALES,
    correlation,
    explained_variance,
    group_means,
    sequence_advantages,
    within_group_std,
)
from lmgcot.rl.ppo_math import (
    LOSS_AGGREGATIONS,
    RunningMeanStd,
    aggregate,
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
from lmgcot.rl.value_head import ValueHead
from lmgcot.student.batching import pad_to_multiple

log = logging.getLogger("lmgcot")

# (batch, rationales, token_logprobs) -> {component: per-sample scores (None: missing), ...,
# "total": per-sample terminal rewards}. `token_logprobs` are the reference model's untempered
# log-probs of each rationale's tokens (for the fluency aspect).
RewardFn = Callable[[dict[str, Any], list[str], list[list[float]]], dict[str, list]]
# (rollout number, rows of {"input", "rationale", reward components..., "total"}) -> None
SampleLogger = Callable[[int, list[dict[str, Any]]], None]
KLController = FixedKLController | AdaptiveKLController
SCORE_NORMS = ("none", "running", "group")
# Where PPO's value head reads its decoder states: the policy's own (its value loss shapes the
# policy's body too), the policy's detached (the loss trains the head alone), or a separate copy of
# the student (twice the compute, no interference).
CRITICS = ("shared", "detached", "separate")
# The `rl` keys that take one of a closed set of values, and the set (the pipeline checks them too).
RL_CHOICES = {
    "algorithm": ALGORITHMS,
    "loss_agg": LOSS_AGGREGATIONS,
    "grpo_scale": GRPO_SCALES,
    "critic": CRITICS,
    "score_norm": SCORE_NORMS,
}

# Responses are right-padded to a multiple of this, so few distinct shapes reach the model.
RESPONSE_PAD_MULTIPLE = 8
GRADIENT_CLIP = 1.0


class RationaleRefiner(pl.LightningModule):
    """RL over rationales sampled from an encoder-decoder student, with manual optimisation: each
    `training_step` is one rollout (k samples for each of the batch's questions, drawn in one
    `generate` call that runs the encoder once per question), its scoring, and `ppo_epochs` passes
    of minibatch updates over whole questions.

    `algorithm` picks the advantage estimator:

    - `ppo`: per-token KL penalty plus the terminal score, GAE over a value head's estimates,
      clipped surrogate and clipped value losses (`critic` says where the head reads from);
    - `rloo`, `grpo`, `reinforce`: no critic; each rationale's advantage is its score against a
      baseline from the other samples of its question (`rloo`: leave-one-out mean; `grpo`: group
      mean, divided by a std per `grpo_scale`) or from the batch (`reinforce`), given to all of its
      tokens; the same clipped surrogate keeps several passes (`ppo_epochs` > 1) safe.

    The KL to the frozen reference is either in the reward (`kl_in_reward`: per token for PPO, the
    sequence total subtracted from the score for the critic-free estimators) or a k3 loss term.

    Memory: the reference is a full deep copy of the initial student (weights only: no gradients,
    no optimiser state, always in eval mode), i.e. ~1x the policy's weights on top of the policy's
    ~4x (weights, gradients, two Adam moments); `critic=separate` adds another ~4x. The reference
    is a registered submodule, so it moves with the module and is saved in checkpoints: a resumed
    run keeps penalising drift from the *original* student rather than from whatever policy the
    checkpoint holds.

    Dropout is switched off for the whole step (generation, rollout scoring and updates), so the
    ratio compares the same deterministic function before and after each update.

    Note: under manual optimisation Lightning's `global_step` (and so `Trainer(max_steps=...)`)
    counts optimiser steps, `steps_per_rollout` of them per training step.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        reward_fn: RewardFn,
        optimizer: Callable[..., torch.optim.Optimizer],
        kl_controller: KLController,
        kl_estimator: str = "k1",
        algorithm: str = "ppo",
        samples_per_question: int = 1,
        loss_agg: str = "token_mean",
        kl_in_reward: bool = True,
        grpo_scale: str = "group",
        critic: str = "shared",
        value_warmup: int = 0,
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
        weighted_components: Sequence[str] = (),
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
                reward, the rest are only logged. `batch` is the dataloader's batch (it has
                "inputs", the prompts, once per question, and whatever else the caller put there,
                e.g. example indices) with every per-question list repeated for the question's
                k samples; `token_logprobs` are the frozen reference's untempered log-probs of
                each rationale's tokens.
            optimizer: partial taking the trained parameters (policy, and the critic under
                `ppo`) and returning an optimiser.
            kl_controller: gives the KL penalty coefficient and is updated with the observed KL.
            kl_estimator: per-token KL estimator of the penalty in the reward and of `rl/kl`:
                "k1", "k3" or "abs".
            algorithm: "ppo", "rloo", "grpo" or "reinforce" (see the class docstring).
            samples_per_question: k rationales sampled per question in each rollout (>= 2 for
                rloo and grpo, whose baselines come from a question's other samples).
            loss_agg: how per-token policy (and KL) losses are reduced: "token_mean",
                "seq_mean" or "sum_norm" (`lmgcot.rl.ppo_math.LOSS_AGGREGATIONS`).
            kl_in_reward: the KL penalty in the reward (True) or as a k3 loss term (False).
            grpo_scale: the std that divides GRPO's group-centred scores: "group", "batch" or
                "none".
            critic: PPO's value head on the policy's decoder states ("shared"), on the same
                states detached ("detached"), or on a separate copy of the student ("separate").
            value_warmup: PPO: rollouts in which only the critic learns (policy untouched), so
                the first policy updates see fitted values instead of a fresh head's noise.
            gamma: discount factor over response tokens, in [0, 1].
            lam: GAE lambda in [0, 1] (bias/variance trade-off of the advantages).
            clip_range: PPO ratio clip epsilon (> 0).
            clip_range_value: value-prediction clip around the rollout values (None: no clip).
            vf_coef: weight of the value loss in the summed loss.
            ppo_epochs: passes over each rollout batch (>= 1).
            minibatch_size: rationales per optimiser step (>= 1; rounded to whole questions).
            max_new_tokens: longest sampled rationale, in tokens (truncated ones have no EOS).
            whiten_advantages: PPO: standardise advantages over the batch's real tokens.
            score_clip: clamp the total reward to [-score_clip, score_clip] (None: no clamp).
            temperature: sampling temperature (> 0); log-probs use the same tempered logits.
            max_source_length: truncate encoded inputs to this many tokens (None: no limit).
            score_norm: "none"; "running" (standardise scores by their running mean and std,
                checkpointed); "group" (subtract the mean score of the question's samples).
            value_head_mlp: hidden width of the value head's one ReLU layer (None: linear).
            weighted_components: reward components that carry weight in the total; a warning
                names any of them that shows no spread within questions in a rollout.
            sample_logger: called every `log_samples_every` rollouts with sample rationales and
                their rewards (a table for the loggers).
            log_samples_every: rollouts between sample tables (0: never).
            num_samples_logged: rows per sample table.
        """
        super().__init__()
        if ppo_epochs < 1 or minibatch_size < 1 or max_new_tokens < 1 or samples_per_question < 1:
            raise ValueError(
                f"ppo_epochs={ppo_epochs}, minibatch_size={minibatch_size}, "
                f"max_new_tokens={max_new_tokens} and samples_per_question="
                f"{samples_per_question} must be >= 1"
            )
        chosen = dict(
            algorithm=algorithm,
            loss_agg=loss_agg,
            grpo_scale=grpo_scale,
            critic=critic,
            score_norm=score_norm,
        )
        for key, allowed in RL_CHOICES.items():
            if (value := chosen[key]) not in allowed:
                raise ValueError(f"rl.{key}={value!r}: allowed values are {list(allowed)}")
        if algorithm in GROUP_BASELINES and samples_per_question < 2:
            raise ValueError(f"rl.algorithm={algorithm} needs rl.samples_per_question >= 2")
        if not temperature > 0:
            raise ValueError(f"rl.temperature={temperature}: must be > 0")
        if value_warmup < 0:
            raise ValueError(f"rl.value_warmup={value_warmup}: must be >= 0")
        self.automatic_optimization = False
        self.model = model
        self.ref_model = copy.deepcopy(model).eval()
        self.ref_model.requires_grad_(False)
        self.algorithm = algorithm
        self.uses_critic = algorithm == "ppo"
        self.critic = critic
        # The critic exists only where it is used, so critic-free checkpoints carry none.
        self.value_head = (
            ValueHead(model.config.d_model, value_head_mlp, zero_init=True)
            if self.uses_critic
            else None
        )
        self.critic_model = (
            copy.deepcopy(model) if self.uses_critic and critic == "separate" else None
        )
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.optimizer_factory = optimizer
        self.kl_controller = kl_controller
        self.kl_estimator = kl_estimator
        self.samples_per_question = int(samples_per_question)
        self.loss_agg = loss_agg
        self.kl_in_reward = bool(kl_in_reward)
        self.grpo_scale = grpo_scale
        self.value_warmup = int(value_warmup)
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
        self.weighted_components = tuple(weighted_components)
        self._warned_no_spread: set[str] = set()
        self.sample_logger = sample_logger
        self.log_samples_every = int(log_samples_every)
        self.num_samples_logged = int(num_samples_logged)
        self.rollouts_done = 0
        # One entry per val evaluation: {"rollouts", "reward", "scores" (per question, in val
        # order)}, so that the export can compare policies question by question (rl.selection).
        self.val_history: list[dict[str, Any]] = []
        self._val_scores: list[float] = []

    @classmethod
    def from_config(
        cls,
        rl: Mapping[str, Any],
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        reward_fn: RewardFn,
        optimizer: Callable[..., torch.optim.Optimizer],
        **kwargs: Any,
    ) -> RationaleRefiner:
        """From the `rl` config group (conf/rl/default.yaml); `kwargs` add or override arguments
        the config does not hold (max_source_length, sample_logger, weighted_components, ...)."""
        kl = rl["kl"]
        controller: KLController = (
            AdaptiveKLController(float(kl["coef"]), float(kl["target"]), float(kl["horizon"]))
            if kl["controller"] == "adaptive"
            else FixedKLController(float(kl["coef"]))
        )
        optional_float = {
            key: None if rl[key] is None else float(rl[key])
            for key in ("clip_range_value", "score_clip")
        }
        args: dict[str, Any] = dict(
            kl_controller=controller,
            kl_estimator=str(kl["estimator"]),
            kl_in_reward=bool(kl["in_reward"]),
            algorithm=str(rl["algorithm"]),
            samples_per_question=int(rl["samples_per_question"]),
            loss_agg=str(rl["loss_agg"]),
            grpo_scale=str(rl["grpo_scale"]),
            critic=str(rl["critic"]),
            value_warmup=int(rl["value_warmup"]),
            gamma=float(rl["gamma"]),
            lam=float(rl["lam"]),
            clip_range=float(rl["clip_range"]),
            vf_coef=float(rl["vf_coef"]),
            ppo_epochs=int(rl["ppo_epochs"]),
            minibatch_size=int(rl["minibatch_size"]),
            max_new_tokens=int(rl["max_new_tokens"]),
            whiten_advantages=bool(rl["whiten_advantages"]),
            temperature=float(rl["temperature"]),
            score_norm=str(rl["score_norm"]),
            value_head_mlp=None if rl["value_head_mlp"] is None else int(rl["value_head_mlp"]),
            log_samples_every=int(rl["log_samples_every"]),
            num_samples_logged=int(rl["num_samples_logged"]),
            **optional_float,
        )
        args.update(kwargs)
        return cls(model, tokenizer, reward_fn, optimizer, **args)

    def questions_per_step(self) -> int:
        """Questions in one minibatch: `minibatch_size` rationales, rounded to whole questions."""
        return max(1, self.minibatch_size // self.samples_per_question)

    def steps_per_rollout(self, questions: int) -> int:
        """Optimiser steps one rollout of `questions` questions takes: what Lightning's
        `global_step` (and so `Trainer(max_steps=...)`) counts under manual optimisation."""
        return self.ppo_epochs * math.ceil(questions / self.questions_per_step())

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
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        greedy: bool = False,
        num_samples: int = 1,
    ) -> list[list[int]]:
        """`num_samples` responses per prompt (a prompt's samples next to each other), sampled
        from the untruncated (tempered) policy distribution in one call (the encoder runs once
        per prompt), or one greedy response per prompt (for validation).

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
                "num_return_sequences": num_samples,
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
        groups: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        response_mask: torch.Tensor,
        hidden: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tempered logits (n, T, V) of n responses to the prompts `groups` indexes into, and with
        `hidden` the last decoder states (n, T, d_model).

        The encoder runs once per prompt and its states are repeated for the prompt's responses;
        gradients flow back through the repeat.
        """
        encoded = model.get_encoder()(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        out = model(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoded[groups]),
            attention_mask=attention_mask[groups],
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=response_mask.long(),
            output_hidden_states=hidden,
            use_cache=False,
        )
        # The last decoder state is taken after the final layer norm but before T5's
        # d_model ** -0.5 rescaling for tied embeddings, which only serves the LM head.
        states = out.decoder_hidden_states[-1] if hidden else None
        return out.logits / self.temperature, states

    def _values(
        self,
        policy_states: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        groups: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        response_mask: torch.Tensor,
    ) -> torch.Tensor:
        """The critic's (n, T) values: of the policy's states (`shared`, `detached`), or of a
        separate student's."""
        if self.critic == "separate":
            _, states = self._forward(
                self.critic_model,
                input_ids,
                attention_mask,
                groups,
                decoder_input_ids,
                response_mask,
                hidden=True,
            )
        elif self.critic == "detached" or self.rollouts_done < self.value_warmup:
            # During warm-up the value loss must not move the policy's body either.
            states = policy_states.detach()
        else:
            states = policy_states
        return self.value_head(states)

    # ---------------------------------------------------------------- rollout

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

    def _normalise(self, scores: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        if self.score_norm == "running":
            self.score_stats.update(scores)
            return normalize_scores(scores, self.score_stats)
        if self.score_norm == "group":
            return scores - group_means(scores, groups)[groups]
        return scores

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        prompts: list[str] = list(batch["inputs"])
        k = self.samples_per_question
        n = len(prompts) * k
        groups = torch.arange(len(prompts), device=self.device).repeat_interleave(k)
        # Dropout off throughout: see the class docstring.
        self.eval()
        input_ids, attention_mask = self.encode(prompts)

        # 1. Generate: k sampled rationales per question, the encoder run once per question.
        responses = self.generate(input_ids, attention_mask, num_samples=k)
        lengths, response_ids, mask, decoder_input_ids = self._rollout_tensors(responses)
        rollout = (input_ids, attention_mask, groups, decoder_input_ids, mask)

        # 2. Rollout log-probs (and PPO's values); log-probs of the frozen reference.
        with torch.no_grad():
            logits, states = self._forward(self.model, *rollout, hidden=self.uses_critic)
            old_logprobs = logprobs_from_logits(logits, response_ids)
            entropy = entropy_from_logits(logits, mask)
            old_values = self._values(states, *rollout) if self.uses_critic else None
            ref_logits, _ = self._forward(self.ref_model, *rollout)
            ref_logprobs = logprobs_from_logits(ref_logits, response_ids)
            plain_ref = (
                ref_logprobs
                if self.temperature == 1.0
                else logprobs_from_logits(ref_logits * self.temperature, response_ids)
            )

        # 3. Score the decoded rationales.
        rationales = self._decode(responses)
        samples = _repeat_per_sample(batch, len(prompts), k)
        rewards = self.reward_fn(samples, rationales, self._per_row(plain_ref, mask))
        if "total" not in rewards:
            raise KeyError(f"reward_fn must return a 'total' entry (got {sorted(rewards)})")
        raw_scores = torch.tensor(rewards["total"], dtype=torch.float32, device=self.device)
        scores = clip_scores(self._normalise(raw_scores, groups), self.score_clip)

        # 4. KL to the reference, then advantages.
        with torch.no_grad():
            kl = kl_estimate(old_logprobs, ref_logprobs, self.kl_estimator) * mask
            sequence_kl = kl.sum(dim=1)
            kl_coef = self.kl_controller.value
            penalty = kl_coef if self.kl_in_reward else 0.0
            diagnostics: dict[str, Any] = {}
            if self.uses_critic:
                per_token_rewards = token_rewards(scores, kl, mask, penalty)
                advantages, returns = gae(per_token_rewards, old_values, mask, self.gamma, self.lam)
                if self.whiten_advantages:
                    advantages = masked_whiten(advantages, mask)
                diagnostics["rl/explained_variance"] = explained_variance(old_values, returns, mask)
                sequence_advantage = masked_mean(advantages, mask, dim=1)
            else:
                sequence_advantage = sequence_advantages(
                    self.algorithm, scores - penalty * sequence_kl, groups, self.grpo_scale
                )
                advantages, returns = sequence_advantage[:, None] * mask, None
            diagnostics["rl/adv_score_corr"] = correlation(raw_scores, sequence_advantage)
            if k > 1:
                # The part of the score a policy can change: its deviation within the question.
                within = raw_scores - group_means(raw_scores, groups)[groups]
                diagnostics["rl/adv_within_corr"] = correlation(within, sequence_advantage)

        # 5. Epochs over shuffled minibatches of whole questions.
        stats = self._update(
            rollout,
            response_ids,
            old_logprobs,
            ref_logprobs,
            advantages,
            old_values,
            returns,
            kl_coef,
        )
        self.kl_controller.update(sequence_kl.mean().item(), n_steps=n)

        log = {
            "rl/kl": sequence_kl.mean(),
            "rl/kl_coef": kl_coef,
            "rl/entropy": entropy,
            "rl/response_length": lengths.float().mean(),
            **diagnostics,
            **stats,
        }
        log.update(_reward_means(rewards, "rewards/{}/mean"))
        log.update(self._reward_spreads(rewards, groups))
        self.log_dict(log, on_step=True, on_epoch=False, batch_size=n)
        self.rollouts_done += 1
        self._log_samples(samples, rationales, rewards, n)

    def _update(
        self,
        rollout: tuple[torch.Tensor, ...],
        response_ids: torch.Tensor,
        old_logprobs: torch.Tensor,
        ref_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        old_values: torch.Tensor | None,
        returns: torch.Tensor | None,
        kl_coef: float,
    ) -> dict[str, torch.Tensor]:
        """`ppo_epochs` passes of clipped policy (+ value, + KL) updates; mean losses per rollout."""
        input_ids, attention_mask, groups, decoder_input_ids, mask = rollout
        optimizer = self.optimizers()
        n_questions = input_ids.shape[0]
        per_step = self.questions_per_step()
        warming_up = self.uses_critic and self.rollouts_done < self.value_warmup
        stats: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("policy_loss", "clipfrac", "approx_kl")
        }
        for _ in range(self.ppo_epochs):
            order = torch.randperm(n_questions, device=self.device)
            for questions in order.split(per_step):
                # The minibatch's samples, and their questions renumbered 0..q-1.
                rows = (groups[:, None] == questions[None, :]).nonzero()
                idx, local = rows[:, 0], rows[:, 1]
                mb_mask = mask[idx]
                mb_logits, mb_states = self._forward(
                    self.model,
                    input_ids[questions],
                    attention_mask[questions],
                    local,
                    decoder_input_ids[idx],
                    mb_mask,
                    hidden=self.uses_critic,
                )
                mb_logprobs = logprobs_from_logits(mb_logits, response_ids[idx])
                p_loss, clipfrac, approx_kl = policy_loss(
                    mb_logprobs,
                    old_logprobs[idx],
                    advantages[idx],
                    mb_mask,
                    self.clip_range,
                    agg=self.loss_agg,
                    max_new_tokens=self.max_new_tokens,
                )
                loss = torch.zeros_like(p_loss) if warming_up else p_loss
                if not warming_up and not self.kl_in_reward and kl_coef > 0:
                    kl_term = kl_estimate(mb_logprobs, ref_logprobs[idx], "k3")
                    kl_loss = aggregate(kl_term, mb_mask, self.loss_agg, self.max_new_tokens)
                    loss = loss + kl_coef * kl_loss
                    stats.setdefault("kl_loss", []).append(kl_loss.detach())
                if self.uses_critic:
                    mb_values = self._values(
                        mb_states,
                        input_ids[questions],
                        attention_mask[questions],
                        local,
                        decoder_input_ids[idx],
                        mb_mask,
                    )
                    v_loss, _ = value_loss(
                        mb_values, old_values[idx], returns[idx], mb_mask, self.clip_range_value
                    )
                    loss = loss + self.vf_coef * v_loss
                    stats.setdefault("value_loss", []).append(v_loss.detach())
                optimizer.zero_grad()
                self.manual_backward(loss)
                self.clip_gradients(
                    optimizer, gradient_clip_val=GRADIENT_CLIP, gradient_clip_algorithm="norm"
                )
                optimizer.step()
                for key, value in (
                    ("policy_loss", p_loss),
                    ("clipfrac", clipfrac),
                    ("approx_kl", approx_kl),
                ):
                    stats[key].append(value.detach())
        return {f"rl/{k}": torch.stack(v).mean() for k, v in stats.items()}

    def _reward_spreads(self, rewards: dict[str, list], groups: torch.Tensor) -> dict[str, float]:
        """`rewards/<name>/spread`: each component's mean std within questions (over the batch
        with one sample per question); warns once per weighted component that has none."""
        out = {}
        for name, values in rewards.items():
            if any(v is None for v in values):
                continue
            spread = within_group_std(torch.tensor(values, dtype=torch.float64), groups.cpu())
            out[f"rewards/{name}/spread"] = spread
            if (
                name in self.weighted_components
                and spread == 0
                and name not in self._warned_no_spread
            ):
                self._warned_no_spread.add(name)
                log.warning(
                    "refine: reward component %r has no spread within questions at rollout %d: "
                    "it gives the update no signal (constant for this student's samples?)",
                    name,
                    self.rollouts_done + 1,
                )
        return out

    def _log_samples(
        self, samples: dict[str, Any], rationales: list[str], rewards: dict[str, list], n: int
    ) -> None:
        if (
            self.sample_logger is None
            or self.log_samples_every <= 0
            or (self.rollouts_done - 1) % self.log_samples_every != 0
        ):
            return
        shown = samples.get("questions", samples["inputs"])
        rows = []
        for i in range(min(n, self.num_samples_logged)):
            row = {"input": shown[i], "rationale": rationales[i]}
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
        groups = torch.arange(len(inputs), device=self.device)
        ref_logits, _ = self._forward(
            self.ref_model, input_ids, attention_mask, groups, decoder_input_ids, mask
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
        params = list(self.model.parameters())
        for critic_part in (self.value_head, self.critic_model):
            if critic_part is not None:
                params += list(critic_part.parameters())
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


def _repeat_per_sample(batch: dict[str, Any], n_questions: int, k: int) -> dict[str, Any]:
    """The batch with every per-question list repeated for the question's k samples."""
    if k == 1:
        return batch
    return {
        key: [x for x in value for _ in range(k)]
        if isinstance(value, (list, tuple)) and len(value) == n_questions
        else value
        for key, value in batch.items()
    }
