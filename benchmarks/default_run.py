"""Time and peak memory of `lmgcot` with no arguments (the offline default), run by hand.

    python benchmarks/default_run.py [--results FILE] [extra overrides...]

Runs the real console script in a fresh output root (so the call cache starts empty), then prints
wall time, peak resident memory of the process tree's largest process, and the EM table.
`--results FILE` keeps a copy of the run's results.json (the output root is deleted).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    keep = None
    if argv[:1] == ["--results"]:
        keep, argv = Path(argv[1]), argv[2:]
    lmgcot = Path(sys.executable).with_name("lmgcot")
    with tempfile.TemporaryDirectory(prefix="lmgcot-bench-") as root:
        env = {**os.environ, "LMGCOT_ROOT": root, "WANDB_MODE": "offline"}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [str(lmgcot), *argv], env=env, cwd=root, capture_output=True, text=True
        )
        wall = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        results_file = next(Path(root, "outputs").rglob("results.json"))
        text = results_file.read_text()
        if keep is not None:
            keep.write_text(text)
        results = json.loads(text)
    print(f"wall time: {wall:.1f} s   peak RSS: {peak_mb:.0f} MB   cores: {os.cpu_count()}")
    for name, m in results["methods"].items():
        extra = f"  vote share {m['vote_share']:.3f}" if "vote_share" in m else ""
        print(f"{name:18s} EM {m['em']:.3f}  F1 {m['f1']:.3f}  n {m['n']}{extra}")
    print("stage seconds:", results["timings_s"])
    print("teacher:", results["teacher"].get("train"))
    print("distill:", results["distill"])
    print("refine:", results.get("refine"))
    for source, scores in results.get("rationale_quality", {}).items():
        print(f"quality {source:14s}", " ".join(f"{k}={v:.3f}" for k, v in scores.items()))
    print("large LM:", {k: results["llm"][k] for k in ("calls", "cache_hits")})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
