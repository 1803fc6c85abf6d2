"""How many CPU threads a run's torch work uses: the `threads` setting, applied before any work.

Torch takes every core by default, so jobs sharing a machine slow each other down. With
`threads=null` a run takes the user's OMP_NUM_THREADS if set, else the usable cores divided by the
jobs running at once (`hydra.launcher.n_jobs` when the joblib launcher runs it, else 1). The
setting is for speed, so no fingerprint holds it (a student trained afresh at another count can
differ slightly, through the order of its floating-point sums).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from omegaconf import DictConfig

from lmgcot.config.rules import RANGES
from lmgcot.errors import ConfigError

log = logging.getLogger("lmgcot")

# The user's OMP_NUM_THREADS ("" when unset) as the `lmgcot` command found it, before any job:
# joblib puts an OMP_NUM_THREADS of its own in its workers' environment, and a job of a sequential
# multirun finds the one the job before it set.
USER_SETTING = "LMGCOT_USER_OMP_NUM_THREADS"
# Read by the thread pools of processes the run starts (Lightning's spawned DDP workers).
CHILD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class ThreadCount:
    """The number of threads and where it came from, for the log."""

    count: int
    reason: str
    automatic: bool = False  # from the cores, not from `threads` or OMP_NUM_THREADS


def remember_user_setting() -> None:
    """Record the user's OMP_NUM_THREADS for every job this process launches (call first thing)."""
    os.environ.setdefault(USER_SETTING, os.environ.get("OMP_NUM_THREADS", ""))


def use_threads(setting: int | None) -> ThreadCount:
    """Resolve `threads` for this job and apply it to torch and to child processes' environment;
    raises ConfigError (one line) for a count below 1. Logs the count once at INFO."""
    problem = RANGES["threads"].problem("threads", setting)
    if problem:
        raise ConfigError(problem)
    cores = usable_cores()
    user = os.environ.get(USER_SETTING, os.environ.get("OMP_NUM_THREADS", ""))
    chosen = choose(setting, user, cores, jobs_at_once(_hydra_launcher(), cores))
    import torch

    torch.set_num_threads(chosen.count)
    # Allowed once per process, before any inter-op work; a later job in the same process (a
    # sequential multirun, a reused joblib worker) keeps the first job's pool, which the
    # pipeline's own work does not use.
    try:
        torch.set_num_interop_threads(chosen.count)
    except RuntimeError:
        pass
    for var in CHILD_VARS:
        os.environ[var] = str(chosen.count)
    log.info("threads: %d (%s)", chosen.count, chosen.reason)
    warning = busy_warning(chosen, _load_average(), cores)
    if warning:
        log.warning(warning)
    return chosen


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this system
        return 0.0


def choose(setting: int | None, user: str, cores: int, jobs: int) -> ThreadCount:
    """`threads` if set; else the user's OMP_NUM_THREADS (its first number, as OpenMP reads it);
    else `cores // jobs`, at least 1."""
    if setting is not None:
        return ThreadCount(setting, f"threads={setting}")
    first = user.split(",")[0].strip()
    if first:
        if first.isdigit() and int(first) >= 1:
            return ThreadCount(int(first), f"OMP_NUM_THREADS={user}")
        log.warning("OMP_NUM_THREADS=%s: not a positive whole number; ignored", user)
    return ThreadCount(
        max(1, cores // jobs),
        f"{cores} usable cores / {jobs} job{'s' * (jobs > 1)} at once",
        automatic=True,
    )


def busy_warning(chosen: ThreadCount, load: float, cores: int) -> str | None:
    """A warning when the automatic count takes several cores that other processes keep busy (a
    1-minute load average at least one core above the cores): torch's threads then wait on each
    other, and a run can go many times slower than with one thread (on 2 shared cores, 1 question
    a second against 14). The count stays as chosen, so that a command means the same run
    whatever else the machine is doing."""
    if not chosen.automatic or chosen.count < 2 or load < cores + 1:
        return None
    return (
        f"threads: {chosen.count} chosen from the cores, but the load average is {load:.1f} on "
        f"{cores} cores: beside other busy processes several torch threads can run many times "
        "slower than one; threads=1 may be faster (set threads to silence this)"
    )


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: taskset, a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def jobs_at_once(launcher: DictConfig | None, cores: int) -> int:
    """How many jobs run beside this one on the machine: the joblib launcher's `n_jobs` (with
    joblib's meaning of None and negative counts) when it runs the job, else 1. `launcher` is
    `hydra.launcher` of a multirun job, None otherwise."""
    if launcher is None or "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n_jobs = launcher.get("n_jobs")
    if n_jobs is None:
        return 1
    return max(1, cores + 1 + n_jobs if n_jobs < 0 else n_jobs)


def _hydra_launcher() -> DictConfig | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return hydra_cfg.launcher if hydra_cfg.mode == RunMode.MULTIRUN else None
