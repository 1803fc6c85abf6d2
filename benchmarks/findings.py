"""The paper's three findings, measured on runs of the offline default over seeds. Run by hand:

    python benchmarks/reward_effects.py --out OUT --seeds 0,1,2 --jobs 2
    python benchmarks/findings.py OUT

`OUT` is `benchmarks/reward_effects.py`'s output: `OUT/seed<N>/<reward>/` run directories. The
`all` run of each seed is the default configuration (`reward=all`); its missing baselines (standard, CoT,
self-consistency) are evaluated into it first (`lmgcot stages=[evaluate]`, reusing its students and
cached calls). Then, with every question of every seed one pair, and 95% bootstrap intervals:

1. Does LM guidance with KD and self-consistency beat KD, standard prompting and CoT?
   (test EM, paired differences, one-sided sign tests)
2. Does RL raise rationale quality and EM? (`reward=task` and `reward=all` against KD; each
   aspect under its own reward is `reward_effects.py`'s table)
3. Do the highest-quality rationales give the best answers? Per rationale: EM of the KD
   student's test rationales by quarter of quality (the mean of the eight aspects) and the rank
   correlation of quality with EM; per student: over the RL students of every reward option and
   seed, the rank correlation of a student's mean quality with its EM, and the EM of the
   highest-quality student against the best EM.

Prints markdown tables; `--json FILE` keeps the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from reward_effects import ci, paired, read_rows

from lmgcot.eval.methods import PAPER_METHODS
from lmgcot.rewards.aspects import ASPECTS

ROOT = Path(__file__).resolve().parents[1]
# The paper's methods, as the default evaluation runs them.
BASELINES = list(PAPER_METHODS)
# The reward option of the default configuration (conf/config.yaml): its runs hold the baselines.
DEFAULT_REWARD = "all"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out", type=Path, help="reward_effects.py's --out directory")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    seeds = sorted(args.out.glob("seed*"), key=lambda p: int(p.name[4:]))
    if not seeds:
        raise SystemExit(f"{args.out}: no seed<N> run directories")
    rng = np.random.default_rng(0)
    for seed_dir in seeds:
        complete_baselines(seed_dir / DEFAULT_REWARD, int(seed_dir.name[4:]), args.threads)
    out = {
        "one": finding_one(seeds, rng, args.boot),
        "two": finding_two(seeds, rng, args.boot),
        "three": finding_three(seeds),
    }
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


def complete_baselines(run_dir: Path, seed: int, threads: int) -> None:
    """Evaluate the methods `reward_effects.py` left out into the default configuration's run."""
    results = json.loads((run_dir / "results.json").read_text())
    if all(m in results["methods"] for m in BASELINES):
        return
    cmd = [
        str(Path(sys.executable).with_name("lmgcot")),
        f"reward={DEFAULT_REWARD}",
        f"seed={seed}",
        "stages=[evaluate]",
        f"evaluation.methods=[{','.join(BASELINES)}]",
        "print_results=false",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{run_dir}: evaluation failed:\n{proc.stderr[-3000:]}")


def finding_one(seeds: list[Path], rng, n_boot: int) -> dict:
    em = {m: {} for m in BASELINES[:4]}
    per_seed = []
    for seed_dir in seeds:
        row = {}
        for method in em:
            rows = read_rows(seed_dir / DEFAULT_REWARD / "eval" / f"{method}.jsonl")
            em[method] |= {(seed_dir.name, i): r["em"] for i, r in rows.items()}
            row[method] = float(np.mean([r["em"] for r in rows.values()]))
        per_seed.append(row)
    print("## 1. LM-guided CoT with KD and self-consistency against the baselines (test EM)\n")
    print("| seed | " + " | ".join(em) + " |")
    print("|---|" + "---|" * len(em))
    for seed_dir, row in zip(seeds, per_seed):
        print(f"| {seed_dir.name[4:]} | " + " | ".join(f"{row[m]:.3f}" for m in em) + " |")
    print("| mean | " + " | ".join(f"{np.mean([r[m] for r in per_seed]):.3f}" for m in em) + " |")
    print()
    comparisons = {}
    print("| KD+SC against | difference [95% CI] | sign test (wins/losses, p) |")
    print("|---|---|---|")
    for other in ("lm_guided_kd", "standard", "cot"):
        keys = sorted(em[other])
        pairs = [(em[other][k], em["lm_guided_kd_sc"][k]) for k in keys]
        comparisons[other] = paired(pairs, rng, n_boot)
        c = comparisons[other]
        print(f"| {other} | {ci(c)} | {c['wins']}/{c['losses']}, p={c['p']:.2g} |")
    print()
    return {"per_seed": per_seed, "kd_sc_against": comparisons}


def finding_two(seeds: list[Path], rng, n_boot: int) -> dict:
    print("## 2. RL against KD (test, pooled over seeds)\n")
    print(
        "| reward | quality: KD -> RL | difference [95% CI] | EM: KD -> RL | difference [95% CI] "
        "| EM sign test | exported |"
    )
    print("|---|---|---|---|---|---|---|")
    out = {}
    for reward in ("task", "all", "rationale"):
        runs = [s / reward for s in seeds if (s / reward / "results.json").exists()]
        if not runs:
            continue
        quality, em, exported = [], [], []
        for run in runs:
            q = {
                s: read_rows(run / "eval" / "quality" / f"lm_guided_{s}.jsonl")
                for s in ("kd", "rl")
            }
            e = {s: read_rows(run / "eval" / f"lm_guided_{s}.jsonl") for s in ("kd", "rl")}
            quality += [
                (_quality(q["kd"][i]), _quality(q["rl"][i])) for i in q["kd"] if i in q["rl"]
            ]
            em += [(e["kd"][i]["em"], e["rl"][i]["em"]) for i in e["kd"] if i in e["rl"]]
            exported.append(json.loads((run / "results.json").read_text())["refine"]["selected"])
        qd, ed = paired(quality, rng, n_boot), paired(em, rng, n_boot)
        out[reward] = {"quality": qd, "em": ed, "exported": exported}
        print(
            f"| {reward} | {qd['kd']:.3f} -> {qd['rl']:.3f} | {ci(qd)} | {ed['kd']:.3f} -> "
            f"{ed['rl']:.3f} | {ci(ed)} | {ed['wins']}/{ed['losses']}, p={ed['p']:.2g} | "
            f"{', '.join(exported)} |"
        )
    print()
    return out


def finding_three(seeds: list[Path]) -> dict:
    print("## 3. Do the highest-quality rationales give the best answers?\n")
    quality, correct = [], []
    for seed_dir in seeds:
        q = read_rows(seed_dir / DEFAULT_REWARD / "eval" / "quality" / "lm_guided_kd.jsonl")
        e = read_rows(seed_dir / DEFAULT_REWARD / "eval" / "lm_guided_kd.jsonl")
        for i in q:
            if i in e:
                quality.append(_quality(q[i]))
                correct.append(e[i]["em"])
    quality, correct = np.array(quality), np.array(correct)
    edges = np.quantile(quality, [0.25, 0.5, 0.75])
    quarter = np.searchsorted(edges, quality, side="right")
    print("Per rationale (the KD student's greedy test rationales, all seeds):\n")
    print("| quality quarter | mean quality | n | EM |")
    print("|---|---|---|---|")
    quarters = []
    for k in range(4):
        m = quarter == k
        quarters.append(
            {"quality": float(quality[m].mean()), "n": int(m.sum()), "em": float(correct[m].mean())}
        )
        print(
            f"| {k + 1} | {quarters[-1]['quality']:.3f} | {quarters[-1]['n']} | "
            f"{quarters[-1]['em']:.3f} |"
        )
    rho_rationale = _spearman(quality, correct)
    print(f"\nSpearman correlation of quality with EM: {rho_rationale:+.3f}\n")
    students = []
    for seed_dir in seeds:
        for run in sorted(p for p in seed_dir.iterdir() if (p / "results.json").exists()):
            q = read_rows(run / "eval" / "quality" / "lm_guided_rl.jsonl")
            e = read_rows(run / "eval" / "lm_guided_rl.jsonl")
            students.append(
                {
                    "seed": seed_dir.name[4:],
                    "reward": run.name,
                    "quality": float(np.mean([_quality(r) for r in q.values()])),
                    "em": float(np.mean([r["em"] for r in e.values()])),
                }
            )
    print("Per student (the exported student of every reward option and seed):\n")
    print(
        "| seed | highest-quality student: reward, quality, EM | best-EM student: reward, quality, "
        "EM | Spearman(quality, EM) over its students |"
    )
    print("|---|---|---|---|")
    per_seed = {}
    for seed in sorted({s["seed"] for s in students}, key=int):
        group = [s for s in students if s["seed"] == seed]
        top_q = max(group, key=lambda s: s["quality"])
        top_em = max(group, key=lambda s: s["em"])
        rho = _spearman(np.array([s["quality"] for s in group]), np.array([s["em"] for s in group]))
        per_seed[seed] = {"top_quality": top_q, "top_em": top_em, "spearman": rho}
        print(
            f"| {seed} | {top_q['reward']}, {top_q['quality']:.3f}, {top_q['em']:.3f} | "
            f"{top_em['reward']}, {top_em['quality']:.3f}, {top_em['em']:.3f} | {rho:+.2f} |"
        )
    print()
    return {
        "quarters": quarters,
        "spearman_rationale": rho_rationale,
        "students": students,
        "per_seed": per_seed,
    }


def _quality(row: dict) -> float:
    return float(np.mean([row[a] for a in ASPECTS if row.get(a) is not None]))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their ranks)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
