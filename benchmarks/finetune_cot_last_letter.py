"""Fine-tune-CoT against vanilla fine-tuning on last-letter concatenation, offline, with seeds.

Three configurations per seed, each a full `lmgcot` run (simulated teacher, tiny student):
  vanilla  experiment=vanilla_ft: the student learns the answers alone;
  ftcot_d1 experiment=finetune_cot: one greedy zero-shot-CoT rationale per question;
  ftcot_d4 the same with diverse reasoning: D=4 samples at temperature 0.7.
Each at its defaults, as docs/methods.md prints it. Runs go `--jobs` at a time, one thread each.
Prints a table of test EM per configuration (mean and per seed) and the wall time, and writes it
to <root>/summary.json.

    python benchmarks/finetune_cot_last_letter.py --root /tmp/ftcot --seeds 0 1 2
    # equal epochs instead of equal steps (the schedule stops at 4000 steps):
    python benchmarks/finetune_cot_last_letter.py --root /tmp/ftcot-epochs \
        --set trainer.max_epochs=16 --set trainer.max_steps=-1

benchmarks/readme_figures.py re-runs the same commands one at a time and checks the documented
figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CONFIGS = {
    "vanilla": ["experiment=vanilla_ft"],
    "ftcot_d1": ["experiment=finetune_cot"],
    "ftcot_d4": ["experiment=finetune_cot", "teacher.num_samples=4", "teacher.temperature=0.7"],
}
# The documented commands as they are: the tiny student's settings for last_letter (16,000
# questions, a 600-piece vocabulary, 96 target tokens, 4,000 steps at 1e-3) come from
# conf/schedule/last_letter_tiny.yaml, so these runs measure what docs/methods.md prints.
COMMON = ["dataset=last_letter", "trainer.enable_progress_bar=false"]
LMGCOT = str(Path(sys.executable).with_name("lmgcot"))


def run_one(root: Path, name: str, seed: int, extra: list[str]) -> dict:
    run_dir = root / f"{name}_s{seed}"
    env = {**os.environ, "LMGCOT_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    cmd = [LMGCOT, *COMMON, *CONFIGS[name], f"seed={seed}", f"hydra.run.dir={run_dir}", *extra]
    t0 = time.perf_counter()
    with open(root / f"{name}_s{seed}.log", "w") as log:
        subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    results = json.loads((run_dir / "results.json").read_text())
    return {
        "config": name,
        "seed": seed,
        "seconds": round(time.perf_counter() - t0, 1),
        "methods": {m: v["em"] for m, v in results["methods"].items()},
        "teacher": results.get("teacher", {}).get("train", {}),
        "distill": results["distill"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/ftcot"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra lmgcot override for every run (repeatable)",
    )
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    jobs = [(name, seed) for seed in args.seeds for name in args.configs]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda j: run_one(args.root, *j, args.overrides), jobs))
    wall = time.perf_counter() - t0
    print(f"{'config':10} {'method':16} {'mean EM':>8}  per seed")
    for name in args.configs:
        mine = [r for r in rows if r["config"] == name]
        for method in mine[0]["methods"]:
            ems = [r["methods"][method] for r in mine]
            spread = f" ± {statistics.stdev(ems):.3f}" if len(ems) > 1 else ""
            seeds = " ".join(f"{e:.3f}" for e in ems)
            print(f"{name:10} {method:16} {statistics.mean(ems):8.3f}{spread}  {seeds}")
    for r in rows:
        kept = r["teacher"].get("kept")
        print(
            f"{r['config']:10} seed {r['seed']}: {r['seconds']:.0f} s, "
            f"{r['distill']['train_pairs']} pairs{'' if kept is None else ' kept'}, "
            f"{r['distill']['steps']} steps, best val loss {r['distill']['best_val_loss']}"
        )
    print(f"wall time: {wall / 60:.1f} min for {len(rows)} runs, {args.jobs} at a time")
    summary = {"rows": rows, "wall_s": round(wall, 1), "jobs": args.jobs, "common": COMMON}
    (args.root / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
