"""Values that would otherwise fail only after minutes of work, checked before any."""

from __future__ import annotations

from omegaconf import DictConfig

from lmgcot.data.example import Splits
from lmgcot.errors import ConfigError
from lmgcot.eval.methods import METHODS
from lmgcot.pipeline.stages import STAGES
from lmgcot.pipeline.stages.teacher import teacher_temperature
from lmgcot.rewards.scorer import RewardScorer
from lmgcot.rl.kl import KL_ESTIMATORS
from lmgcot.rl.module import RL_CHOICES
from lmgcot.rl.policy_gradient import GROUP_BASELINES
from lmgcot.student.models import TOKENIZERS
from lmgcot.student.objectives import OBJECTIVES
from lmgcot.teacher import PROMPTINGS


def check_stages(cfg: DictConfig) -> list[str]:
    stages = list(cfg.stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ConfigError(f"stages={stages}: choose from {list(STAGES)} (in that order)")
    return sorted(stages, key=list(STAGES).index)


def check_settings(cfg: DictConfig) -> None:
    """Values that would otherwise fail only after minutes of work, checked before any."""
    e, t, d = cfg.evaluation, cfg.teacher, cfg.distill
    unknown = [m for m in e.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"evaluation.methods: unknown {unknown}; allowed: {list(METHODS)}")
    sc = e.self_consistency
    if int(sc.k) < 1 or float(sc.temperature) <= 0:
        raise ConfigError(
            f"evaluation.self_consistency: k={sc.k}, temperature={sc.temperature}: need k >= 1 and "
            "temperature > 0 (samples at temperature 0 are all the same)"
        )
    if int(t.num_samples) < 1:
        raise ConfigError(f"teacher.num_samples={t.num_samples}: must be >= 1")
    if t.prompting not in PROMPTINGS:
        raise ConfigError(
            f"teacher.prompting={t.prompting!r}: allowed values are {list(PROMPTINGS)}"
        )
    if int(t.few_shot_k) < 1 or int(t.answer_max_new_tokens) < 1:
        raise ConfigError(
            f"teacher.few_shot_k={t.few_shot_k}, teacher.answer_max_new_tokens="
            f"{t.answer_max_new_tokens}: both must be >= 1"
        )
    _check_objective(cfg)
    if teacher_temperature(t) < 0 or not 0 < float(t.top_p) <= 1:
        raise ConfigError(
            f"teacher.temperature={t.temperature}, teacher.top_p={t.top_p}: need temperature >= 0 "
            "and 0 < top_p <= 1"
        )
    s = cfg.student
    if not s.get("pretrained") and s.get("tokenizer", "byt5") not in TOKENIZERS:
        raise ConfigError(
            f"student.tokenizer={s.tokenizer!r}: allowed values are {list(TOKENIZERS)}"
        )
    for key in ("batch_size", "eval_batch_size"):
        if int(d[key]) < 1:
            raise ConfigError(f"distill.{key}={d[key]}: must be >= 1")
    for key in ("answer_max_new_tokens", "cot_max_new_tokens", "student_batch_size"):
        if int(e[key]) < 1:
            raise ConfigError(f"evaluation.{key}={e[key]}: must be >= 1")
    RewardScorer.from_config(cfg.reward, large_lm=None, prompts=None)  # type: ignore[arg-type]
    _check_rl(cfg.rl)


def _check_objective(cfg: DictConfig) -> None:
    """The student's objective against what the run asks of it."""
    d = cfg.distill
    objective = d.objective
    if objective not in OBJECTIVES:
        raise ConfigError(f"distill.objective={objective!r}: allowed values are {list(OBJECTIVES)}")
    if not 0.0 <= float(d.alpha) <= 1.0:
        raise ConfigError(f"distill.alpha={d.alpha}: must be within [0, 1]")
    for name in cfg.evaluation.methods:
        method = METHODS[name]
        if method.student and objective not in method.objectives:
            raise ConfigError(
                f"evaluation.methods: {name} needs a student that {method.student_does} "
                f"(distill.objective in {list(method.objectives)}), got distill.objective={objective}"
            )
    if "refine" in cfg.stages and not OBJECTIVES[objective].writes_rationales:
        raise ConfigError(
            f"stages: refine trains a rationale writer (distill.objective=rationale or multitask), "
            f"got distill.objective={objective}; drop refine from stages"
        )


def _check_rl(r: DictConfig) -> None:
    for key in ("rollouts", "rollout_batch_size", "samples_per_question", "ppo_epochs"):
        if int(r[key]) < 1:
            raise ConfigError(f"rl.{key}={r[key]}: must be >= 1")
    for key in ("minibatch_size", "max_new_tokens", "val_batch_size"):
        if int(r[key]) < 1:
            raise ConfigError(f"rl.{key}={r[key]}: must be >= 1")
    if int(r.rollout_batch_size) % int(r.samples_per_question):
        raise ConfigError(
            f"rl.rollout_batch_size={r.rollout_batch_size} must be a multiple of "
            f"rl.samples_per_question={r.samples_per_question}"
        )
    for key in ("val_every", "log_samples_every"):
        if int(r[key]) < 0:
            raise ConfigError(f"rl.{key}={r[key]}: must be >= 0 (0: never)")
    for key in ("gamma", "lam"):
        if not 0.0 <= float(r[key]) <= 1.0:
            raise ConfigError(f"rl.{key}={r[key]}: must be within [0, 1]")
    for key in ("temperature", "clip_range"):
        if not float(r[key]) > 0:
            raise ConfigError(f"rl.{key}={r[key]}: must be > 0")
    for key, allowed in RL_CHOICES.items():
        if r[key] not in allowed:
            raise ConfigError(f"rl.{key}={r[key]!r}: allowed values are {list(allowed)}")
    if r.algorithm in GROUP_BASELINES and int(r.samples_per_question) < 2:
        raise ConfigError(
            f"rl.samples_per_question={r.samples_per_question}: rl.algorithm={r.algorithm} needs "
            ">= 2 (its baseline comes from the other samples of the same question)"
        )
    if int(r.value_warmup) < 0:
        raise ConfigError(f"rl.value_warmup={r.value_warmup}: must be >= 0")
    alpha = r.get("keep_best_alpha")
    if alpha is not None and not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"rl.keep_best_alpha={alpha}: must be within (0, 1), or null")
    kl = r.kl
    if kl.estimator not in KL_ESTIMATORS:
        raise ConfigError(
            f"rl.kl.estimator={kl.estimator!r}: allowed values are {list(KL_ESTIMATORS)}"
        )
    if kl.controller not in ("fixed", "adaptive"):
        raise ConfigError(f"rl.kl.controller={kl.controller!r}: allowed values are fixed, adaptive")
    if not float(kl.coef) >= 0:
        raise ConfigError(f"rl.kl.coef={kl.coef}: must be >= 0")
    if kl.controller == "adaptive" and not (float(kl.target) > 0 and float(kl.horizon) > 0):
        raise ConfigError(
            f"rl.kl.target={kl.target}, rl.kl.horizon={kl.horizon}: both must be > 0 for the "
            "adaptive controller"
        )


def check_splits(splits: Splits, stages: list[str], name: str) -> None:
    if {"teacher", "distill"} & set(stages) and not splits.train:
        raise ConfigError(f"dataset={name}: the train split is empty")
    if "evaluate" in stages and not splits.test:
        raise ConfigError(f"dataset={name}: the test split is empty")
