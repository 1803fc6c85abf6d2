"""Is a sweep's parallel launcher ever slower than running its jobs one after another? Run by hand.

    python benchmarks/parallel_sweep.py [--steps 300] [--jobs 2] [--oversubscribed] [overrides...]

Runs the same multirun of `--jobs` independent jobs (the smoke experiment, distilled for `--steps`
steps, one seed per job, nothing shared between them) through the real console script twice: with
`hydra/launcher=parallel` (all jobs at once, `threads` automatic: usable cores / jobs) and with
Hydra's basic launcher (one job after another, each on every core). `--oversubscribed` adds a third
parallel run in which every job takes every core (`threads=<cores>`), the state before `threads`
existed. Each run gets a fresh output root (empty call cache and artifact store); OMP_NUM_THREADS
and MKL_NUM_THREADS are taken out of the environment so that `threads` decides.

Prints each run's wall time and its jobs' thread counts, then parallel / sequential: at most 1 is
the goal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lmgcot.config.threads import USER_SETTING, usable_cores


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="distill steps of each job")
    parser.add_argument("--jobs", type=int, default=2, help="jobs in the sweep (and run at once)")
    parser.add_argument(
        "--oversubscribed", action="store_true", help="also run parallel with threads=<cores>"
    )
    args, overrides = parser.parse_known_args(argv)
    seeds = ",".join(str(s) for s in range(args.jobs))
    sweep = [
        "-m",
        "experiment=smoke",
        f"seed={seeds}",
        "share_artifacts=false",
        "trainer.max_epochs=-1",
        f"trainer.max_steps={args.steps}",
        "trainer.enable_progress_bar=false",
        "print_results=false",
        *overrides,
    ]
    parallel = ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={args.jobs}"]
    runs = {"parallel": parallel, "sequential": []}
    if args.oversubscribed:
        runs["parallel, every job on every core"] = [*parallel, f"threads={usable_cores()}"]
    print(f"{args.jobs} jobs of {args.steps} distill steps; {usable_cores()} usable cores")
    walls = {}
    for name, launcher in runs.items():
        wall, threads = _sweep([*sweep, *launcher])
        if wall is None:
            return 1
        walls[name] = wall
        print(f"{name:34s} {wall:7.1f} s   threads per job: {threads}")
    for name in walls:
        if name != "sequential":
            print(f"{name} / sequential: {walls[name] / walls['sequential']:.2f}")
    return 0


def _sweep(args: list[str]) -> tuple[float | None, list[int]]:
    """Wall seconds of `lmgcot *args` in a fresh root, and each job's thread count."""
    lmgcot = Path(sys.executable).with_name("lmgcot")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.pop(USER_SETTING, None)
    with tempfile.TemporaryDirectory(prefix="lmgcot-sweep-bench-") as root:
        env.update(LMGCOT_ROOT=root, WANDB_MODE="offline", HF_HUB_OFFLINE="1")
        t0 = time.perf_counter()
        proc = subprocess.run(
            [str(lmgcot), *args], env=env, cwd=root, capture_output=True, text=True
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return None, []
        results = sorted(Path(root, "outputs", "multirun").rglob("results.json"))
        threads = [json.loads(p.read_text())["setup"]["threads"] for p in results]
    return wall, threads


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
