"""A sweep's `objective` against what the sweep varies, checked before any trial runs.

An objective is a yardstick only while the sweep leaves what defines it alone. The reward mix's
own value (`refine.val_reward_best`) is a mean of the aspect scores under the weights being
searched: a search over `reward.weights.*` raises it by moving weight onto aspects that already
score high, without changing the student, and trials with different weights are scored on
different scales. The default yardstick, `refine.val_task` (the exported student's val task
score), is one the weights do not define.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lmgcot.errors import ConfigError


@dataclass(frozen=True)
class Yardstick:
    """Numbers of results.json that some config keys define."""

    objectives: tuple[str, ...]  # dotted paths into results.json; each covers what lies under it
    defined_by: tuple[str, ...]  # config keys; each covers the keys under it
    what: str  # what the numbers are, for the refusal
    instead: str  # what to do instead


YARDSTICKS = (
    Yardstick(
        objectives=(
            "refine.val_reward_best",
            "refine.val_reward_before",
            "refine.selection.best_reward",
            "refine.reward",
        ),
        defined_by=("reward",),
        what="the reward mix's own value",
        instead="optimise refine.val_task (the refined student's val task score) instead",
    ),
    Yardstick(
        objectives=("refine.val_task", "refine.val_task_before"),
        defined_by=("reward.task_metric",),
        what="the task score under reward.task_metric",
        instead="keep reward.task_metric fixed",
    ),
)


def check_sweep_objective(cfg: DictConfig) -> None:
    """Raise ConfigError (one line) when `cfg.objective` is a number the multirun's varied keys
    define: the search would move its own yardstick."""
    objective = cfg.get("objective")
    if not objective:
        return
    varied = varied_keys(cfg)
    for stick in YARDSTICKS:
        if not any(_covers(o, str(objective)) for o in stick.objectives):
            continue
        moving = [k for k in varied if any(_covers(d, k) for d in stick.defined_by)]
        if moving:
            raise ConfigError(
                f"objective={objective} is {stick.what}, which the swept {moving[0]} defines: "
                f"the search would move its own yardstick; {stick.instead}"
            )


# Launcher settings that must be whole counts of at least this much, where the launcher has them;
# past them joblib and submitit fail with a traceback when the sweep starts.
SUBMITIT_MINIMUMS = {
    "timeout_min": 1,
    "nodes": 1,
    "tasks_per_node": 1,
    "cpus_per_task": 1,
    "gpus_per_node": 0,
    "mem_gb": 1,
}


def check_launcher(cfg: DictConfig) -> None:
    """Raise ConfigError (one line) for a launcher setting the launcher would refuse with a
    traceback: joblib's n_jobs=0, submitit's non-positive counts and time."""
    launcher = OmegaConf.select(cfg, "hydra.launcher", default=None)
    if launcher is None:
        return
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        n = launcher.get("n_jobs")
        if isinstance(n, bool) or not isinstance(n, int) or n == 0:
            raise ConfigError(
                f"hydra.launcher.n_jobs={n}: must be a non-zero whole number (jobs at once; "
                "-1: one per core)"
            )
    if "submitit" in target:
        for key, minimum in SUBMITIT_MINIMUMS.items():
            value = launcher.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(
                    f"hydra.launcher.{key}={value}: must be a whole number >= {minimum}"
                )


def varied_keys(cfg: DictConfig) -> list[str]:
    """Config keys the multirun varies: the sweeper's `params` and the command line's sweep
    overrides (`key=a,b`, `key=interval(0,1)`), which Hydra's sweepers both search."""
    overrides = []
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None)
    if params:
        overrides += [f"{key}={value}" for key, value in params.items()]
    overrides += list(OmegaConf.select(cfg, "hydra.overrides.task", default=None) or [])
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


def _covers(prefix: str, key: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


class SweepObjectiveCheck(Callback):
    """Hydra callback (conf/config.yaml): refuses such a sweep, or a launcher setting the launcher
    would refuse with a traceback, at multirun start, before the sweeper launches a job. Hydra
    turns a callback's exceptions into warnings, so it exits here."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_launcher(config)
            check_sweep_objective(config)
        except ConfigError as err:
            # As lmgcot.cli.fail does; the config layer cannot import the CLI above it.
            for line in str(err).splitlines():
                print(f"lmgcot: error: {line}", file=sys.stderr)
            sys.exit(2)
