"""Every value the run would otherwise find wrong only after minutes of work, checked before any.

Types were checked when Hydra composed the config (the schemas in this package); `check` adds
ranges, closed sets, keys that no schema names, and the settings that must agree with each other.
It reports every bad value, one line each, in one ConfigError.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from lmgcot.artifacts import STAGE_ORDER, RunDir
from lmgcot.config.rules import ADAPTIVE_KL, RANGES
from lmgcot.config.targets import target_problems
from lmgcot.errors import ConfigError


def check(cfg: DictConfig) -> list[str]:
    """The configured stages in running order; raises ConfigError listing every bad value."""
    missing = missing_keys(cfg)
    if missing:  # the checks below would trip over them
        raise ConfigError("\n".join(f"{key}: no value (???); set it" for key in missing))
    stages, problems = _stages(cfg)
    problems += unknown_keys(cfg)
    problems += _ranges(cfg)
    problems += _closed_sets(cfg)
    problems += _objective(cfg, stages)
    problems += _selection(cfg, stages)
    problems += _rl(cfg)
    problems += _spend_cap(cfg)
    problems += _reward(cfg)
    problems += _trainer_arguments(cfg)
    problems += target_problems(cfg, problems)
    if problems:
        raise ConfigError("\n".join(problems))
    return stages


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None)


def _has(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = _get(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node


def _stages(cfg: DictConfig) -> tuple[list[str], list[str]]:
    order = list(STAGE_ORDER)
    stages = list(cfg.stages)
    if not stages or any(s not in order for s in stages):
        return [], [f"stages={stages}: choose from {order} (in that order)"]
    return sorted(stages, key=order.index), []


def missing_keys(node: DictConfig | ListConfig, path: str = "") -> list[str]:
    """Keys left at ??? (a schema field no option set), without resolving interpolations: some
    resolve only inside a Hydra run."""
    out = []
    for key in node if isinstance(node, DictConfig) else range(len(node)):
        child = node._get_node(key)
        if child._is_missing():
            out.append(f"{path}{key}")
        elif isinstance(child, (DictConfig, ListConfig)) and not child._is_none():
            out += missing_keys(child, f"{path}{key}.")
    return out


def unknown_keys(node: DictConfig, path: str = "") -> list[str]:
    """Keys of closed schema nodes that their schema does not name: Hydra lets `+key=value` add
    them, and nothing would read them. Open nodes (struct flag off) pass theirs on."""
    out = []
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema) and node._get_node_flag("struct") is not False:
        names = {f.name for f in dataclasses.fields(schema)}
        where = f"{path[:-1]}" if path else "the top level"
        out += [
            f"{path}{key}: unknown key; {where} has {sorted(names)}"
            for key in node
            if key not in names and not (not path and key == "hydra")
        ]
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            out += unknown_keys(child, f"{path}{key}.")
    return out


def _ranges(cfg: DictConfig) -> list[str]:
    rules = dict(RANGES)
    if _get(cfg, "rl.kl.controller") == "adaptive":
        rules.update(ADAPTIVE_KL)
    problems = (rule.problem(key, _get(cfg, key)) for key, rule in rules.items() if _has(cfg, key))
    return [p for p in problems if p]


def _closed_sets(cfg: DictConfig) -> list[str]:
    from lmgcot.data.base import CONTEXT_MODES
    from lmgcot.eval.methods import METHODS
    from lmgcot.rl.kl import KL_CONTROLLERS, KL_ESTIMATORS
    from lmgcot.rl.module import RL_CHOICES
    from lmgcot.student.models import TOKENIZERS
    from lmgcot.student.objectives import OBJECTIVES
    from lmgcot.teacher import PROMPTINGS

    sets = {
        "teacher.prompting": PROMPTINGS,
        "distill.objective": OBJECTIVES,
        "dataset.context": CONTEXT_MODES,
        "rl.kl.estimator": KL_ESTIMATORS,
        "rl.kl.controller": KL_CONTROLLERS,
        **{f"rl.{key}": allowed for key, allowed in RL_CHOICES.items()},
    }
    if not _get(cfg, "student.pretrained"):  # a checkpoint brings its own tokenizer
        sets["student.tokenizer"] = TOKENIZERS
    out = [
        f"{key}={_get(cfg, key)!r}: allowed values are {list(allowed)}"
        for key, allowed in sets.items()
        if _has(cfg, key) and _get(cfg, key) not in allowed
    ]
    unknown = [m for m in cfg.evaluation.methods if m not in METHODS]
    if unknown:
        out.append(f"evaluation.methods: unknown {unknown}; allowed: {list(METHODS)}")
    return out


def _objective(cfg: DictConfig, stages: list[str]) -> list[str]:
    """The student's objective against what the run asks of it: each method names the objectives
    whose student can serve it."""
    from lmgcot.eval.methods import METHODS
    from lmgcot.student.objectives import OBJECTIVES

    objective = cfg.distill.objective
    if objective not in OBJECTIVES:  # reported with the closed sets
        return []
    out = []
    for name in cfg.evaluation.methods:
        method = METHODS.get(name)
        if method is not None and method.student and objective not in method.objectives:
            out.append(
                f"evaluation.methods: {name} needs a student that {method.student_does} "
                f"(distill.objective in {list(method.objectives)}), got distill.objective={objective}"
            )
    if "refine" in stages and not OBJECTIVES[objective].refinable:
        writers = [o.name for o in OBJECTIVES.values() if o.refinable]
        out.append(
            f"stages: refine trains a rationale writer (distill.objective in {writers}), "
            f"got distill.objective={objective}; drop refine from stages"
        )
    return out


def _selection(cfg: DictConfig, stages: list[str]) -> list[str]:
    """Choosing among samples: a selection reward that needs no gold answer, the students the
    methods use (made by a stage of this run or already in the run directory), and no oracle as
    the run's objective."""
    from lmgcot.eval.methods import METHODS
    from lmgcot.eval.selection import selection_rewards

    out = []
    allowed = selection_rewards()
    chosen = _get(cfg, "evaluation.select_reward")
    if chosen not in allowed:
        out.append(
            f"evaluation.select_reward={chosen!r}: allowed values are {list(allowed)} (reward "
            "options without the task reward; choosing by the gold answer is oracle_best_of_k)"
        )
    run_dir = _run_dir(cfg)
    needing: dict[str, list[str]] = {}
    for name in cfg.evaluation.methods if "evaluate" in stages else ():
        stage = getattr(METHODS.get(name), "student", None)
        if stage and stage not in stages:
            needing.setdefault(stage, []).append(name)
    for stage, names in needing.items():
        if run_dir is not None and not RunDir(run_dir).stage(stage).done:
            what = "a distilled student" if stage == "distill" else "an RL-refined student"
            out.append(
                f"evaluation.methods: {', '.join(names)} need {what} and the {stage} stage does "
                f"not run: add {stage} to stages or point hydra.run.dir at a run that has one"
            )
    objective = str(_get(cfg, "objective") or "")
    oracles = [n for n, m in METHODS.items() if m.oracle and n in objective.split(".")]
    if oracles:
        out.append(
            f"objective={objective}: {oracles[0]} chooses with the gold test answers: a bound "
            "for analysis, never an objective"
        )
    return out


def _run_dir(cfg: DictConfig) -> Path | None:
    """The run directory, where it resolves (outside a Hydra run `${hydra:...}` does not)."""
    try:
        value = _get(cfg, "paths.run_dir")
    except Exception:  # an interpolation that needs Hydra's runtime
        return None
    return Path(value) if value else None


def _rl(cfg: DictConfig) -> list[str]:
    from lmgcot.rl.policy_gradient import GROUP_BASELINES

    r, out = cfg.rl, []
    per_question = r.samples_per_question
    if per_question >= 1 and r.rollout_batch_size >= 1 and r.rollout_batch_size % per_question:
        out.append(
            f"rl.rollout_batch_size={r.rollout_batch_size} must be a multiple of "
            f"rl.samples_per_question={per_question}"
        )
    if r.algorithm in GROUP_BASELINES and per_question < 2:
        out.append(
            f"rl.samples_per_question={per_question}: rl.algorithm={r.algorithm} needs >= 2 "
            "(its baseline comes from the other samples of the same question)"
        )
    return out


def _spend_cap(cfg: DictConfig) -> list[str]:
    """A spend cap needs the model's prices to be checked against (a negative one is a range
    problem, reported with the ranges)."""
    from lmgcot.llm.base import no_price_for_cap

    cap = _get(cfg, "large_lm.max_cost_usd")
    if not isinstance(cap, (int, float)) or isinstance(cap, bool) or cap < 0:
        return []
    model = str(_get(cfg, "large_lm.model"))
    if not _has(cfg, "large_lm.prices"):
        return [
            f"large_lm.max_cost_usd={cap:g}: the {_backend_name(cfg)} backend is not billed (it "
            "has no large_lm.prices); remove the cap"
        ]
    if model in (_get(cfg, "large_lm.prices") or {}):
        return []
    return [no_price_for_cap(_backend_name(cfg), model, cap)]


def _backend_name(cfg: DictConfig) -> str:
    """The large LM's backend name (`LargeLM.backend`), else its class name."""
    from hydra.utils import get_class

    target = str(_get(cfg, "large_lm._target_") or "large_lm")
    try:
        return str(get_class(target).backend)
    except Exception:  # a class that cannot be imported is reported when it is built
        return target.rsplit(".", 1)[-1]


def _reward(cfg: DictConfig) -> list[str]:
    """The reward mix as the refiner will build it (weights, scorer, metric, gate)."""
    from lmgcot.rewards.scorer import RewardScorer

    try:
        RewardScorer.from_config(cfg.reward, large_lm=None, prompts=None)  # type: ignore[arg-type]
    except ConfigError as err:
        return [str(err)]
    return []


def _trainer_arguments(cfg: DictConfig) -> list[str]:
    """Keys added to the open trainer group must be Lightning Trainer arguments: the Trainer
    is built only in the distill stage, after the teacher's calls."""
    from lmgcot.config.variants import TrainerConfig

    typed = {f.name for f in dataclasses.fields(TrainerConfig)}
    extra = [k for k in cfg.trainer if k not in typed]
    if not extra:
        return []
    import pytorch_lightning as pl

    accepted = set(inspect.signature(pl.Trainer.__init__).parameters)
    return [
        f"trainer.{key}: not an argument of pytorch_lightning.Trainer"
        for key in extra
        if key not in accepted
    ]
