"""`RefinerSettings`: the hyper-parameters of `RationaleRefiner`, checked once, and their reading
from the `rl` config group (lmgcot/conf/rl/default.yaml)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from lmgcot.rl.kl import AdaptiveKLController, FixedKLController
from lmgcot.rl.policy_gradient import ALGORITHMS, GROUP_BASELINES, GRPO_SCALES
from lmgcot.rl.ppo_math import LOSS_AGGREGATIONS

# (batch, rationales, token_logprobs) -> {component: per-sample scores (None: missing), ...,
# "total": per-sample terminal rewards}. `batch` is the dataloader's batch (it has "inputs", the
# prompts, once per question, and whatever else the caller put there, e.g. example indices) with
# every per-question list repeated for the question's k samples; `token_logprobs` are the frozen
# reference model's untempered log-probs of each rationale's tokens (for the fluency aspect).
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


@dataclasses.dataclass(frozen=True)
class RefinerSettings:
    """What `RationaleRefiner` is told besides its model, tokenizer, reward and optimiser.

    Attributes:
        kl_estimator: per-token KL estimator of the penalty in the reward and of `rl/kl`:
            "k1", "k3" or "abs".
        algorithm: "ppo", "rloo", "grpo" or "reinforce" (see `RationaleRefiner`).
        samples_per_question: k rationales sampled per question in each rollout (>= 2 for
            rloo and grpo, whose baselines come from a question's other samples).
        loss_agg: how per-token policy (and KL) losses are reduced: "token_mean",
            "seq_mean" or "sum_norm" (`lmgcot.rl.ppo_math.LOSS_AGGREGATIONS`).
        kl_in_reward: the KL penalty in the reward (True) or as a k3 loss term (False).
        grpo_scale: the std that divides GRPO's group-centred scores: "group", "batch" or "none".
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
        log_samples_every: rollouts between sample tables (0: never).
        num_samples_logged: rows per sample table.
        guard: a reward component recorded per val question besides the total (e.g. "task");
            an evaluation whose mean falls more than `guard_max_drop` below the distilled
            student's (the evaluation at rollout 0) is not eligible for export.
        guard_max_drop: see `guard`.
        fast_forward: a T5 policy's (and reference's, and critic's) teacher-forced forward
            through `lmgcot.student.fast_t5` rather than the model's own.
    """

    kl_estimator: str = "k1"
    algorithm: str = "ppo"
    samples_per_question: int = 1
    loss_agg: str = "token_mean"
    kl_in_reward: bool = True
    grpo_scale: str = "group"
    critic: str = "shared"
    value_warmup: int = 0
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    clip_range_value: float | None = 0.2
    vf_coef: float = 0.5
    ppo_epochs: int = 4
    minibatch_size: int = 8
    max_new_tokens: int = 32
    whiten_advantages: bool = True
    score_clip: float | None = None
    temperature: float = 1.0
    max_source_length: int | None = None
    score_norm: str = "none"
    value_head_mlp: int | None = None
    weighted_components: tuple[str, ...] = ()
    log_samples_every: int = 0
    num_samples_logged: int = 8
    guard: str | None = None
    guard_max_drop: float = 0.0
    fast_forward: bool = True

    def __post_init__(self) -> None:
        self._check()
        # Callers pass config values (OmegaConf containers, numpy scalars): one type from here on.
        for name, kind in (
            ("samples_per_question", int),
            ("kl_in_reward", bool),
            ("value_warmup", int),
            ("weighted_components", tuple),
            ("log_samples_every", int),
            ("num_samples_logged", int),
            ("guard_max_drop", float),
            ("fast_forward", bool),
        ):
            object.__setattr__(self, name, kind(getattr(self, name)))

    def _check(self) -> None:
        counts = (
            self.ppo_epochs,
            self.minibatch_size,
            self.max_new_tokens,
            self.samples_per_question,
        )
        if min(counts) < 1:
            raise ValueError(
                f"ppo_epochs={self.ppo_epochs}, minibatch_size={self.minibatch_size}, "
                f"max_new_tokens={self.max_new_tokens} and samples_per_question="
                f"{self.samples_per_question} must be >= 1"
            )
        for key, allowed in RL_CHOICES.items():
            if (value := getattr(self, key)) not in allowed:
                raise ValueError(f"rl.{key}={value!r}: allowed values are {list(allowed)}")
        if self.algorithm in GROUP_BASELINES and self.samples_per_question < 2:
            raise ValueError(f"rl.algorithm={self.algorithm} needs rl.samples_per_question >= 2")
        if not self.temperature > 0:
            raise ValueError(f"rl.temperature={self.temperature}: must be > 0")
        if not self.guard_max_drop >= 0:
            raise ValueError(f"guard_max_drop={self.guard_max_drop}: must be >= 0")
        if self.value_warmup < 0:
            raise ValueError(f"rl.value_warmup={self.value_warmup}: must be >= 0")

    @classmethod
    def from_config(cls, rl: Mapping[str, Any], **overrides: Any) -> RefinerSettings:
        """From the `rl` config group; `overrides` set what the config does not hold
        (max_source_length, weighted_components) or replace what it does."""
        kl = rl["kl"]
        optional_float = {
            key: None if rl[key] is None else float(rl[key])
            for key in ("clip_range_value", "score_clip")
        }
        values: dict[str, Any] = dict(
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
            fast_forward=bool(rl["fast_forward"]),
            **optional_float,
        )
        return cls(**{**values, **overrides})


def kl_controller_from_config(kl: Mapping[str, Any]) -> KLController:
    """The `rl.kl` group's controller: adaptive (steering towards `target`) or fixed."""
    if kl["controller"] == "adaptive":
        return AdaptiveKLController(float(kl["coef"]), float(kl["target"]), float(kl["horizon"]))
    return FixedKLController(float(kl["coef"]))
