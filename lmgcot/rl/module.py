"""`RationaleRefiner`: RL fine-tuning of the seq2seq student's rationales against a reward: PPO with
a value head, or a critic-free estimator (RLOO, GRPO, REINFORCE) over k samples per question.

The LightningModule itself; its settings are in `settings`, the encoder/sampling passes in
`sampling`, a rollout's scoring and advantages in `rollout`, the update in `update`, and the
rollout's metrics in `rollout_logs`."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmgcot.rl.masked import logprobs_from_logits
from lmgcot.rl.rollout import RolloutMixin
from lmgcot.rl.rollout_logs import RolloutLogsMixin, reward_means
from lmgcot.rl.sampling import SamplingMixin
from lmgcot.rl.scores import RunningMeanStd
from lmgcot.rl.settings import (
    RL_CHOICES,
    KLController,
    RefinerSettings,
    RewardFn,
    SampleLogger,
    kl_controller_from_config,
)
from lmgcot.rl.update import UpdateMixin
from lmgcot.rl.value_head import ValueHead
from lmgcot.student.optim import build_optimizer

# RL_CHOICES is read from here by the pipeline's and the config's checks.
__all__ = ["RL_CHOICES", "RationaleRefiner", "RewardFn", "SampleLogger"]


class RationaleRefiner(
    SamplingMixin, RolloutMixin, UpdateMixin, RolloutLogsMixin, pl.LightningModule
):
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
        sample_logger: SampleLogger | None = None,
        settings: RefinerSettings | None = None,
        **kwargs: Any,
    ):
        """
        Args:
            model: the student policy (a T5-style encoder-decoder); it is trained in place.
            tokenizer: the student's tokenizer (needs pad and EOS ids).
            reward_fn: scores the sampled rationales (see `RewardFn`); its "total" is the
                terminal reward, the other components are only logged.
            optimizer: partial taking the trained parameters (policy, and the critic under
                `ppo`) and returning an optimiser.
            kl_controller: gives the KL penalty coefficient and is updated with the observed KL.
            sample_logger: called every `log_samples_every` rollouts with sample rationales and
                their rewards (a table for the loggers).
            settings: the hyper-parameters, or `kwargs`: `RefinerSettings`' fields.
        """
        super().__init__()
        if settings is None:
            settings = RefinerSettings(**kwargs)
        elif kwargs:
            raise TypeError(f"give either settings or their fields, not both ({sorted(kwargs)})")
        self.automatic_optimization = False
        self.model = model
        self.ref_model = copy.deepcopy(model).eval()
        self.ref_model.requires_grad_(False)
        uses_critic = settings.algorithm == "ppo"
        # The critic exists only where it is used, so critic-free checkpoints carry none.
        self.value_head = (
            ValueHead(model.config.d_model, settings.value_head_mlp, zero_init=True)
            if uses_critic
            else None
        )
        self.critic_model = (
            copy.deepcopy(model) if uses_critic and settings.critic == "separate" else None
        )
        self.uses_critic = uses_critic
        # Plain attributes, so that a caller (or a test) may adjust one after construction.
        for field in dataclasses.fields(settings):
            setattr(self, field.name, getattr(settings, field.name))
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.optimizer_factory = optimizer
        self.kl_controller = kl_controller
        self.score_stats = RunningMeanStd()
        self._warned_no_spread: set[str] = set()
        self.sample_logger = sample_logger
        self.rollouts_done = 0
        # One entry per val evaluation: {"rollouts", "reward", "scores" (per question, in val
        # order), "components" (each component's mean)}, so that the export can compare policies
        # question by question (rl.selection) and report what the weights do not define.
        self.val_history: list[dict[str, Any]] = []
        self._val_scores: list[float] = []
        self._val_guard: list[float] = []
        self._val_components: dict[str, list[float]] = {}

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
        """From the `rl` config group (lmgcot/conf/rl/default.yaml); `kwargs` add or override arguments
        the config does not hold (max_source_length, sample_logger, weighted_components, ...)."""
        kl_controller = kwargs.pop("kl_controller", kl_controller_from_config(rl["kl"]))
        sample_logger = kwargs.pop("sample_logger", None)
        settings = RefinerSettings.from_config(rl, **kwargs)
        return cls(model, tokenizer, reward_fn, optimizer, kl_controller, sample_logger, settings)

    def questions_per_step(self) -> int:
        """Questions in one minibatch: `minibatch_size` rationales, rounded to whole questions."""
        return max(1, self.minibatch_size // self.samples_per_question)

    def steps_per_rollout(self, questions: int) -> int:
        """Optimiser steps one rollout of `questions` questions takes: what Lightning's
        `global_step` (and so `Trainer(max_steps=...)`) counts under manual optimisation."""
        return self.ppo_epochs * math.ceil(questions / self.questions_per_step())

    # ---------------------------------------------------------------- training

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One rollout: sample, score, `ppo_epochs` passes of updates, logs."""
        # Dropout off throughout: see the class docstring.
        self.eval()
        # 1. Generate: k sampled rationales per question, the encoder run once per question.
        rollout = self._sample_rollout(list(batch["inputs"]))
        # 2. Rollout log-probs (and PPO's values); log-probs of the frozen reference.
        logprobs = self._rollout_logprobs(rollout)
        # 3. Score the decoded rationales.
        samples, rationales, rewards = self._rewards(batch, rollout, logprobs.plain_ref_logprobs)
        # 4. KL to the reference, then advantages.
        targets = self._advantages(rollout, logprobs, rewards["total"])
        # 5. Epochs over shuffled minibatches of whole questions.
        stats = self._update(rollout, logprobs, targets)
        self.kl_controller.update(targets.sequence_kl.mean().item(), n_steps=rollout.n)
        self._log_rollout(rollout, logprobs, targets, rewards, stats)
        self.rollouts_done += 1
        self._log_samples(samples, rationales, rewards, rollout.n)

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
        if self.guard is not None:
            if self.guard not in rewards:
                raise KeyError(f"the reward function gave no {self.guard!r} scores for val")
            self._val_guard.extend(float(x or 0.0) for x in rewards[self.guard])
        for name, values in rewards.items():
            if name != "total":
                present = (float(x) for x in values if x is not None)
                self._val_components.setdefault(name, []).extend(present)
        log = reward_means(rewards, "val/{}")
        log["val/reward"] = log.pop("val/total")
        self.log_dict(log, on_step=False, on_epoch=True, batch_size=len(inputs))

    def on_validation_epoch_start(self) -> None:
        self._val_scores, self._val_guard, self._val_components = [], [], {}

    def on_validation_epoch_end(self) -> None:
        if self._val_scores and not self.trainer.sanity_checking:
            scores = self._val_scores
            entry = {
                "rollouts": self.rollouts_done,
                "reward": sum(scores) / len(scores),
                "scores": scores,
                "components": {
                    name: sum(values) / len(values)
                    for name, values in self._val_components.items()
                    if values
                },
            }
            if self.guard is not None:
                entry.update(self._guard_entry(self._val_guard))
            self.val_history.append(entry)
            # What the checkpoint callback ranks by: the val reward, and below every eligible
            # evaluation (rewards lie in [0, 1]) when the guard component fell too far.
            eligible = entry.get("guard_ok", True)
            self.log("val/selection", entry["reward"] - (0.0 if eligible else 2.0))
        self._val_scores, self._val_guard, self._val_components = [], [], {}

    def _guard_entry(self, values: list[float]) -> dict[str, Any]:
        """The guard component's per-question scores and mean, and whether this evaluation is
        within `guard_max_drop` of the distilled student's (rollout 0) mean."""
        mean = sum(values) / len(values)
        base = next((h for h in self.val_history if h["rollouts"] == 0 and "guard" in h), None)
        floor = None if base is None else base["guard_mean"] - self.guard_max_drop
        ok = floor is None or mean >= floor - 1e-12
        self.log(f"val/{self.guard}_drop", 0.0 if base is None else base["guard_mean"] - mean)
        return {"guard": values, "guard_mean": mean, "guard_ok": ok}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        def params() -> list[torch.nn.Parameter]:
            out = list(self.model.parameters())
            for critic_part in (self.value_head, self.critic_model):
                if critic_part is not None:
                    out += list(critic_part.parameters())
            return out

        # The update clips every step (`rl.update.GRADIENT_CLIP`).
        return build_optimizer(self.optimizer_factory, params, self._trainer, clips=True)

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
