"""Student generation: `lmgcot.student.fast_t5_generation.generate` against the model's own
`generate`, run by hand, interleaved repeats, one JSON line per measurement and a summary.

    python benchmarks/generation.py --student RUN/distill/student [--questions 256] [--repeats 3]

Two workloads on the dataset's first `--questions` test questions (the config's dataset and
prompts; the student must have been distilled with them): greedy rationales (evaluation, the
refine stage's val evaluations) and `--k` samples per question at temperature 1 (the refine
stage's rollouts, self-consistency). Both go through `generate_rationales`, so tokenising, length
batching and decoding count on both sides. Greedy outputs are compared too: they must be equal.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmgcot.cli import CONFIG_DIR
from lmgcot.prompts import PromptTemplates
from lmgcot.student.generate import generate_rationales
from lmgcot.student.models import build_student


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", required=True, help="a distilled student directory (HF format)")
    ap.add_argument("--questions", type=int, default=256)
    ap.add_argument("--k", type=int, default=8, help="samples per question")
    ap.add_argument("--batch-size", type=int, default=64, help="questions per generate call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (dataset, prompt, student)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("config", overrides=args.overrides)
    dataset = instantiate(cfg.dataset)
    examples = dataset.load_splits().test[: args.questions]
    prompts = PromptTemplates(**OmegaConf.to_container(cfg.prompt), context_mode=dataset.context)
    inputs = [prompts.student_input(x) for x in examples]
    student = build_student(
        "student",
        pretrained=args.student,
        max_source_length=int(cfg.student.max_source_length),
        max_target_length=int(cfg.student.max_target_length),
    )
    workloads = {
        "greedy": dict(num_samples=1, temperature=0.0),
        f"sample_k{args.k}": dict(num_samples=args.k, temperature=1.0),
    }
    times: dict[tuple[str, bool], list[float]] = {}
    greedy: dict[bool, list] = {}
    for repeat in range(args.repeats):
        for name, options in workloads.items():
            for fast in (True, False):
                t0 = time.perf_counter()
                out = generate_rationales(
                    student, inputs, batch_size=args.batch_size, fast=fast, **options
                )
                seconds = time.perf_counter() - t0
                times.setdefault((name, fast), []).append(seconds)
                if name == "greedy":
                    greedy[fast] = out
                rationales = len(inputs) * options["num_samples"]
                print(
                    json.dumps(
                        {
                            "workload": name,
                            "fast": fast,
                            "repeat": repeat,
                            "seconds": round(seconds, 3),
                            "rationales_per_s": round(rationales / seconds, 1),
                        }
                    )
                )
    print(f"greedy rationales equal: {greedy[True] == greedy[False]}")
    for name in workloads:
        ours, own = times[(name, True)], times[(name, False)]
        ratios = sorted(b / a for a, b in zip(ours, own))
        print(
            f"{name:10s} fast {statistics.median(ours):.2f} s  model's own "
            f"{statistics.median(own):.2f} s  speed-up {statistics.median(ratios):.2f} "
            f"[{ratios[0]:.2f}, {ratios[-1]:.2f}]"
        )


if __name__ == "__main__":
    main()
