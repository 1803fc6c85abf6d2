"""Distillation throughput against Hugging Face's Seq2SeqTrainer on one fixed workload, run by hand.

    python benchmarks/throughput.py --peer-python PEER [--repeats 3] [--steps 60] [--out FILE]
    python benchmarks/throughput.py --part optimizer     # AdamW implementations, step share

The workload (benchmarks/workload.py): a tiny byte-level T5 (about 1.89M parameters) trained on 512
seeded synthetic pairs with AdamW at a constant lr of 3e-4, weight decay 0, gradient norm clipped
at 1; the peers in batches of `--batch` (8) pairs. Each configuration runs in its own fresh process, so peak RSS is its own:

    ours       RationaleDistiller + RationaleDataModule under the Lightning Trainer that
               `build_trainer` makes from conf/trainer/default.yaml, with conf/distill/default.yaml's
               optimizer (its lr and weight decay set to the workload's), batches of
               `--max-tokens` padded tokens (0: the config's batching), the training forward
               `distill.fast_forward` picks (`--forward`: lmgcot.student.fast_t5 or the model's own)
    hf_group   Seq2SeqTrainer, train_sampling_strategy="group_by_length" (benchmarks/peers/)
    hf_random  Seq2SeqTrainer, train_sampling_strategy="random"

They are interleaved within each repeat, in a rotating order. The first `--warmup` steps are not
counted; a step ends when its optimiser step has. Real tokens are non-pad source tokens plus
non-ignored labels, padded tokens the full width of both; tokens/s are over the measured steps'
wall time. Each configuration prints one JSON line (also appended to `--out`), then a summary gives
the median and range of ours / hf_group and ours / hf_random over the repeats (paired by repeat).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workload import make_pairs, rate_fields, tiny_t5  # noqa: E402

ROOT = HERE.parent
PEERS = {"hf_group": "group_by_length", "hf_random": "random"}
OPTIMIZERS = {"forloop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def main() -> int:
    args = _parser().parse_args()
    if args.part == "optimizer":
        for line in optimizer_share(args):
            print(json.dumps(line), flush=True)
        return 0
    if args.part == "ours":
        print(json.dumps(measure_ours(args)), flush=True)
        return 0
    if args.peer_python is None:
        print("--peer-python is required: an interpreter with transformers, accelerate, datasets")
        return 2
    results: dict[str, list[dict]] = {kind: [] for kind in ("ours", *PEERS)}
    kinds = list(results)
    for repeat in range(args.repeats):
        order = kinds[repeat % len(kinds) :] + kinds[: repeat % len(kinds)]
        for kind in order:
            line = {"repeat": repeat, "config": kind, **_run(kind, args)}
            results[kind].append(line)
            print(json.dumps(line), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(line) + "\n")
    summary = _summary(results)
    print(json.dumps(summary), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(summary) + "\n")
    return 0


def measure_ours(args: argparse.Namespace) -> dict:
    """Our distillation of the workload, built as the distill stage builds it."""
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate

    from lmgcot.artifacts import StageDir
    from lmgcot.distill.datamodule import RationaleDataModule
    from lmgcot.distill.module import RationaleDistiller
    from lmgcot.pipeline.builders import build_trainer
    from lmgcot.student.objectives import TrainingPairs

    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, verbose=False)
    distill = config_option("distill/default.yaml")
    distill.optimizer.lr, distill.optimizer.weight_decay = 3e-4, 0.0
    if args.optimizer != "config":
        for key in ("foreach", "fused"):
            distill.optimizer.pop(key, None)
        distill.optimizer.update(OPTIMIZERS[args.optimizer])
    max_tokens = args.max_tokens or distill.get("max_tokens")

    model, tokenizer = tiny_t5(args.seed)
    pairs = make_pairs(args.seed)
    datamodule = RationaleDataModule(
        tokenizer,
        TrainingPairs({"target": pairs}),
        TrainingPairs({"target": pairs[:8]}),  # unused: validation is off, as in HF's run
        max_source_length=1024,  # no pair is truncated
        max_target_length=256,
        batch_size=args.batch,
        group_by_length=distill.group_by_length,
        seed=args.seed,
        max_tokens=max_tokens,
    )
    fast = distill.fast_forward if args.forward == "config" else args.forward == "fast"
    module = RationaleDistiller(model, optimizer=instantiate(distill.optimizer), fast_forward=fast)
    tally = {"real": 0, "padded": 0, "ends": []}

    class StepClock(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if len(tally["ends"]) >= args.warmup:
                labels = batch["labels"]
                tally["real"] += int(batch["attention_mask"].sum()) + int((labels != -100).sum())
                tally["padded"] += batch["input_ids"].numel() + labels.numel()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            tally["ends"].append(time.perf_counter())

    trainer_cfg = config_option("trainer/default.yaml")
    trainer_cfg.update(
        max_steps=args.steps, max_epochs=-1, enable_progress_bar=False, enable_model_summary=False
    )
    with tempfile.TemporaryDirectory(prefix="lmgcot-throughput-") as root:
        trainer, _ = build_trainer(
            trainer_cfg,
            StageDir(Path(root)),
            [],
            monitor=None,
            mode="min",
            limit_val_batches=0,
            use_distributed_sampler=False,
        )
        trainer.callbacks.append(StepClock())
        trainer.fit(module, datamodule=datamodule)
    return {
        "bench": "lmgcot_distill",
        "max_tokens": max_tokens,
        "fast_forward": fast,
        "optimizer": {k: v for k, v in distill.optimizer.items() if not k.startswith("_")},
        **rate_fields(tally, args.warmup),
        "train_loss": round(float(trainer.callback_metrics.get("train/loss", float("nan"))), 4),
        "params": sum(p.numel() for p in model.parameters()),
        "threads": args.threads,
        "torch": torch.__version__,
    }


def optimizer_share(args: argparse.Namespace) -> list[dict]:
    """Seconds per step of forward + backward and of AdamW's step for each implementation, on the
    workload's batches as our sampler makes them (the optimiser timed alone, without a closure)."""
    import torch

    from lmgcot.distill.datamodule import RationaleDataModule
    from lmgcot.student.objectives import TrainingPairs

    torch.set_num_threads(args.threads)
    _, tokenizer = tiny_t5(args.seed)
    pairs = TrainingPairs({"target": make_pairs(args.seed)})
    datamodule = RationaleDataModule(
        tokenizer,
        pairs,
        pairs,
        1024,
        256,
        batch_size=args.batch,
        max_tokens=args.max_tokens or None,
    )
    batches = list(datamodule.train_dataloader())[: args.steps]
    out = []
    for name, options in OPTIMIZERS.items():
        model, _ = tiny_t5(args.seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0, **options)
        model_s = step_s = 0.0
        for n, batch in enumerate(batches):
            t0 = time.perf_counter()
            model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            t1 = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad()
            t2 = time.perf_counter()
            if n >= args.warmup:
                model_s, step_s = model_s + t1 - t0, step_s + t2 - t1
        measured = len(batches) - args.warmup
        out.append(
            {
                "optimizer": name,
                "measured_steps": measured,
                "forward_backward_ms": round(1000 * model_s / measured, 2),
                "optimizer_step_ms": round(1000 * step_s / measured, 2),
                "optimizer_share": round(step_s / (model_s + step_s), 4),
                "threads": args.threads,
            }
        )
    return out


def config_option(path: str):
    """A config option's own keys (its schema defaults aside), as the YAML file writes them."""
    from omegaconf import OmegaConf

    node = OmegaConf.load(ROOT / "lmgcot" / "conf" / path)
    node.pop("defaults", None)
    return node


def _run(kind: str, args: argparse.Namespace) -> dict:
    common = [f"--steps={args.steps}", f"--warmup={args.warmup}", f"--batch={args.batch}"]
    common += [f"--threads={args.threads}", f"--seed={args.seed}"]
    if kind == "ours":
        cmd = [sys.executable, __file__, "--part=ours", f"--optimizer={args.optimizer}", *common]
        cmd.append(f"--forward={args.forward}")
        cmd.append(f"--max-tokens={args.max_tokens}")
    else:
        runner = HERE / "peers" / "hf_trainer.py"
        cmd = [args.peer_python, str(runner), f"--sampling={PEERS[kind]}", *common]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _summary(results: dict[str, list[dict]]) -> dict:
    summary: dict = {"summary": True, "repeats": len(results["ours"])}
    for kind, lines in results.items():
        summary[kind] = {
            key: statistics.median(line[key] for line in lines)
            for key in ("real_tokens_per_s", "padding_efficiency", "peak_rss_mb")
        }
    for peer in PEERS:
        ratios = [
            ours["real_tokens_per_s"] / theirs["real_tokens_per_s"]
            for ours, theirs in zip(results["ours"], results[peer])
        ]
        summary[f"ours_over_{peer}"] = {
            "median": round(statistics.median(ratios), 3),
            "min": round(min(ratios), 3),
            "max": round(max(ratios), 3),
        }
    return summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["compare", "ours", "optimizer"], default="compare")
    p.add_argument("--peer-python", help="interpreter with transformers, accelerate, datasets")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs of each config")
    p.add_argument("--steps", type=int, default=60, help="optimiser steps per run")
    p.add_argument("--warmup", type=int, default=5, help="first steps not counted")
    p.add_argument("--batch", type=int, default=8, help="pairs per batch (without --max-tokens)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of every run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-tokens",
        type=int,
        default=2048,
        help="ours: padded tokens per batch; 2048 (about four of the workload's pairs) is the "
        "largest budget that keeps 95%% of them real; 0: the config's batching",
    )
    p.add_argument(
        "--optimizer",
        choices=["config", *OPTIMIZERS],
        default="config",
        help="ours: AdamW as conf/distill/default.yaml has it, or one implementation",
    )
    p.add_argument(
        "--forward",
        choices=["config", "fast", "hf"],
        default="config",
        help="ours: the training forward: distill.fast_forward as configured, lmgcot's fast T5 "
        "forward, or the model's own",
    )
    p.add_argument("--out", help="append the JSON lines to this file")
    return p


if __name__ == "__main__":
    raise SystemExit(main())
