"""Schemas of the config groups that have one shape for every option: teacher, distill,
evaluation, reward, rl, prompt, paths and the top level.

Fields without a default (MISSING) take their value from the group's YAML option, so the values
live in one place; `reward` is the exception: its options name only their weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Any

from omegaconf import MISSING

from lmgcot.rewards.mix import COMPONENTS

# A float that keeps an int as written: artifact fingerprints hash `1` and `1.0` differently, so
# converting would orphan every artifact made with an integer override.
Number = int | float


@dataclass
class TeacherConfig:
    num_samples: int = MISSING
    temperature: Number | None = MISSING
    top_p: Number = MISSING
    max_new_tokens: int = MISSING
    filter_correct: bool = MISSING
    strip_answer: bool = MISSING
    prompting: str = MISSING
    few_shot_k: int = MISSING
    answer_max_new_tokens: int = MISSING


@dataclass
class DistillConfig:
    objective: str = MISSING
    alpha: Number = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    group_by_length: bool = MISSING
    max_tokens: int | None = MISSING
    fast_forward: bool = MISSING
    num_workers: int = MISSING
    # Hydra `_partial_` targets: their keyword arguments are the callee's, not ours to type.
    optimizer: dict[str, Any] = MISSING
    scheduler: dict[str, Any] | None = MISSING


@dataclass
class SelfConsistencyConfig:
    k: int = MISSING
    temperature: Number = MISSING
    top_p: Number = MISSING


@dataclass
class EvaluationConfig:
    methods: list[str] = MISSING
    answer_max_new_tokens: int = MISSING
    cot_max_new_tokens: int = MISSING
    student_batch_size: int = MISSING
    self_consistency: SelfConsistencyConfig = field(default_factory=SelfConsistencyConfig)
    select_reward: str = MISSING
    num_examples_saved: int = MISSING
    rationale_quality: bool = MISSING


# One weight per reward component, 0 unless an option names it: built from the components' own
# registry so a new aspect is a new weight here too.
RewardWeights = make_dataclass(
    "RewardWeights", [(name, Number, field(default=0.0)) for name in COMPONENTS]
)


@dataclass
class RewardConfig:
    """What every reward option shares; an option sets `name` and its non-zero weights."""

    name: str = MISSING
    weights: RewardWeights = field(default_factory=RewardWeights)  # type: ignore[valid-type]
    scorer: str = "auto"  # auto (offline measures) | judge (the large LM rates the aspects)
    gate: bool = True  # multiply every aspect (never task) by the rationale's well-formedness
    task_metric: str = "em"  # em | f1: the task reward's answer metric
    judge_max_new_tokens: int = 64


@dataclass
class KLConfig:
    in_reward: bool = MISSING
    estimator: str = MISSING
    controller: str = MISSING
    coef: Number = MISSING
    target: Number = MISSING
    horizon: Number = MISSING


@dataclass
class RLConfig:
    algorithm: str = MISSING
    rollouts: int = MISSING
    rollout_batch_size: int = MISSING
    samples_per_question: int = MISSING
    ppo_epochs: int = MISSING
    minibatch_size: int = MISSING
    loss_agg: str = MISSING
    grpo_scale: str = MISSING
    critic: str = MISSING
    value_warmup: int = MISSING
    max_new_tokens: int = MISSING
    temperature: Number = MISSING
    gamma: Number = MISSING
    lam: Number = MISSING
    clip_range: Number = MISSING
    clip_range_value: Number = MISSING
    vf_coef: Number = MISSING
    whiten_advantages: bool = MISSING
    score_norm: str = MISSING
    score_clip: Number | None = MISSING
    kl: KLConfig = field(default_factory=KLConfig)
    value_head_mlp: int | None = MISSING
    optimizer: dict[str, Any] = MISSING
    max_questions: int | None = MISSING
    val_every: int = MISSING
    max_val_questions: int | None = MISSING
    val_batch_size: int = MISSING
    keep_best: bool = MISSING
    keep_best_alpha: Number | None = MISSING
    keep_best_max_task_drop: Number | None = MISSING
    log_samples_every: int = MISSING
    num_samples_logged: int = MISSING
    fast_forward: bool = MISSING


@dataclass
class PromptConfig:
    instruction: str = MISSING
    standard: str = MISSING
    cot: str = MISSING
    guided: str = MISSING
    student: str = MISSING
    max_context_chars: int | None = MISSING
    student_titles: bool = MISSING
    answer_trigger: str = MISSING


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    output_dir: str = MISSING
    cache_dir: str = MISSING
    artifact_dir: str | None = MISSING  # null: no sharing between runs
    run_dir: str = MISSING
    shared_fs: str = "auto"  # auto | local | network: the call cache's mode (docs/cluster.md)


@dataclass
class LmgcotConfig:
    """The top level. The groups are typed by their options' own schemas (see `store.py`); here
    they are only named, so a group option may bring a schema of its own shape."""

    stages: list[str] = MISSING
    seed: int = MISSING
    force: bool = MISSING
    share_artifacts: bool = MISSING
    objective: str | None = MISSING
    sweep_name: str | None = MISSING
    print_results: bool = MISSING
    threads: int | None = MISSING
    paths: Any = MISSING
    prompt: Any = MISSING
    dataset: Any = MISSING
    student: Any = MISSING
    large_lm: Any = MISSING
    teacher: Any = MISSING
    distill: Any = MISSING
    evaluation: Any = MISSING
    reward: Any = MISSING
    rl: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
