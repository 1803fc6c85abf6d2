"""Does a reward on an aspect move that aspect on held-out questions? Run by hand.

    python benchmarks/reward_effects.py --out /tmp/effects --rewards coherence,readability,task
    python benchmarks/reward_effects.py --out /tmp/effects --jobs 2 -- rl.optimizer.lr=1e-4
    python benchmarks/reward_effects.py --out /tmp/effects --seeds 0,1,2 --jobs 2

For each reward option, runs `lmgcot` (the real console script, in this checkout, so teacher and
distilled student come from the shared artifact store after the first run) with the refine and
evaluate stages, `evaluation.methods=[lm_guided_kd,lm_guided_rl]`, into `OUT/seed<N>/<reward>/`; a run
whose `results.json` exists is not run again. Then compares the RL student with the distilled one
on the same test questions, paired:

- every aspect's per-question score (`eval/quality/<source>.jsonl`): mean difference, a 95%
  bootstrap interval, and a one-sided sign test that RL is higher (wins/losses, p);
- EM (`eval/<method>.jsonl`): mean difference and interval;
- whether refine exported the RL policy or kept the distilled student.

Prints, per seed and pooled over the seeds (each question of each seed one pair), one markdown row
per reward (its own aspect, naturalness, EM); every aspect of every row is in `OUT/summary.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lmgcot.rewards.aspects import ASPECTS
from lmgcot.rl.selection import sign_test

ROOT = Path(__file__).resolve().parents[1]
ALL_REWARDS = ("task", "all", "rationale", *ASPECTS)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="one run directory per reward here")
    ap.add_argument("--rewards", default=",".join(ALL_REWARDS), help="comma-separated options")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds: OUT/seed<N>/<reward>")
    ap.add_argument("--jobs", type=int, default=1, help="runs side by side (threads split)")
    ap.add_argument("--threads", type=int, default=None, help="per run (default: cores / jobs)")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: tabulate the finished runs (a reward's row pools the seeds it has)",
    )
    ap.add_argument("overrides", nargs="*", help="extra lmgcot overrides (after --)")
    args = ap.parse_args(argv)
    rewards = [r for r in args.rewards.split(",") if r]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    threads = args.threads or max(1, (os.cpu_count() or 2) // args.jobs)
    # Reward-major, in the order given: the first rewards have every seed first. Jobs side by
    # side then mostly differ in seed, so a seed's distilled student is made once and shared.
    jobs = [(seed, r) for r in rewards for seed in seeds]
    if args.report_only:
        jobs = [(s, r) for s, r in jobs if (args.out / f"seed{s}" / r / "results.json").exists()]
        done = {(s, r): args.out / f"seed{s}" / r for s, r in jobs}
    else:
        done = _run_all(jobs, args, threads)
    rng = np.random.default_rng(0)
    summary = {}
    for seed in seeds:
        print(f"\nseed {seed}\n")
        rows = {r: compare([done[(seed, r)]], rng, args.boot) for r in rewards if (seed, r) in done}
        _print_table(rows)
        summary[f"seed{seed}"] = rows
    if len(seeds) > 1:
        print(f"\npooled over seeds {args.seeds} (question-seed pairs)\n")
        rows = {
            r: compare([done[(s, r)] for s in seeds if (s, r) in done], rng, args.boot)
            for r in rewards
            if any((s, r) in done for s in seeds)
        }
        _print_table(rows)
        summary["pooled"] = rows
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


def _run_all(jobs: list[tuple[int, str]], args, threads: int) -> dict:
    with ThreadPoolExecutor(args.jobs) as pool:
        return dict(
            zip(
                jobs,
                pool.map(
                    lambda j: run(
                        j[1], args.out / f"seed{j[0]}" / j[1], j[0], threads, args.overrides
                    ),
                    jobs,
                ),
            )
        )


def _print_table(rows: dict[str, dict]) -> None:
    print(
        "| reward | aspect | KD | RL | diff [95% CI] | sign test | naturalness diff | EM diff "
        "[95% CI] | EM sign test | exported | refine s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for reward, row in rows.items():
        own = reward if reward in ASPECTS else None
        a = row["aspects"].get(own) if own else None
        nat = row["aspects"].get("naturalness", {})
        em = row["em"]
        cells = (
            [own, f"{a['kd']:.3f}", f"{a['rl']:.3f}", ci(a), _sign(a)]
            if a
            else ["-", "", "", "", ""]
        )
        print(
            f"| {reward} | "
            + " | ".join(cells)
            + f" | {nat.get('diff', float('nan')):+.3f} | {ci(em)} | {_sign(em)} | "
            f"{', '.join(map(str, row['selected']))} | {row['refine_s']} |"
        )


def run(reward: str, run_dir: Path, seed: int, threads: int, overrides: list[str]) -> Path:
    if (run_dir / "results.json").exists():
        return run_dir
    cmd = [
        str(Path(sys.executable).with_name("lmgcot")),
        f"reward={reward}",
        f"seed={seed}",
        "evaluation.methods=[lm_guided_kd,lm_guided_rl]",
        "print_results=false",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "offline"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"reward={reward}: lmgcot failed:\n{proc.stderr[-3000:]}")
    print(f"reward={reward}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return run_dir


def compare(run_dirs: list[Path], rng: np.random.Generator, n_boot: int) -> dict:
    """Paired RL-vs-KD differences over the runs (one per seed): every aspect and EM, each
    question of each run one pair."""
    pairs: dict[str, list[tuple[float, float]]] = {a: [] for a in (*ASPECTS, "em")}
    out: dict = {"aspects": {}, "selected": [], "refine_s": []}
    for run_dir in run_dirs:
        quality = {
            s: read_rows(run_dir / "eval" / "quality" / f"lm_guided_{s}.jsonl")
            for s in ("kd", "rl")
        }
        em = {s: read_rows(run_dir / "eval" / f"lm_guided_{s}.jsonl") for s in ("kd", "rl")}
        refine = json.loads((run_dir / "results.json").read_text()).get("refine", {})
        out["selected"].append(refine.get("selected"))
        out["refine_s"].append(refine.get("seconds"))
        ids = [i for i in quality["kd"] if i in quality["rl"]]
        for aspect in ASPECTS:
            pairs[aspect] += [
                (quality["kd"][i][aspect], quality["rl"][i][aspect])
                for i in ids
                if quality["kd"][i].get(aspect) is not None
                and quality["rl"][i].get(aspect) is not None
            ]
        pairs["em"] += [(em["kd"][i]["em"], em["rl"][i]["em"]) for i in em["kd"] if i in em["rl"]]
    for aspect in ASPECTS:
        if pairs[aspect]:
            out["aspects"][aspect] = paired(pairs[aspect], rng, n_boot)
    out["em"] = paired(pairs["em"], rng, n_boot)
    return out


def paired(pairs: list[tuple[float, float]], rng: np.random.Generator, n_boot: int) -> dict:
    kd, rl = (np.array(x, dtype=float) for x in zip(*pairs))
    diff = rl - kd
    boots = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    low, high = np.quantile(boots, [0.025, 0.975])
    test = sign_test(kd.tolist(), rl.tolist())
    return {
        "kd": float(kd.mean()),
        "rl": float(rl.mean()),
        "diff": float(diff.mean()),
        "low": float(low),
        "high": float(high),
        "wins": test.wins,
        "losses": test.losses,
        "p": test.p_value,
        "n": len(diff),
    }


def read_rows(path: Path) -> dict[str, dict]:
    if not path.exists():
        raise SystemExit(f"{path}: missing (did the run evaluate both students?)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["id"]: r for r in rows}


def ci(x: dict) -> str:
    return f"{x['diff']:+.3f} [{x['low']:+.3f}, {x['high']:+.3f}]"


def _sign(x: dict) -> str:
    return f"{x['wins']}/{x['losses']}, p={x['p']:.2g}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
