"""RL samples per second of the refiner on a fixed workload, beside a peer's, run by hand.

    OMP_NUM_THREADS=2 python benchmarks/rl_throughput.py --repeats 3 \
        --peer "$PEERS/venv-trl011/bin/python $SHARED/peers/trl011_ppo_bench.py --steps 10"

The workload is that of a seq2seq PPO peer: a byte-level T5 (d_model 128, d_ff 512, 4+4 layers,
4 heads, d_kv 32, ~1.89 M parameters, seed 0), 16 prompts of ~300 bytes each step, 48 sampled
tokens each (EOS suppressed, so every response has all 48), a reward per response (the share of its
bytes equal to "e"), then 4 passes of 4 minibatches of 4. Our side runs the real `RationaleRefiner`
under a real Lightning `Trainer`:

- `ppo`: PPO with a value head on the policy's states (`critic=shared`), as the peer has;
- `grpo`: the default estimator, the same 16 samples drawn as 2 prompts x 8 (the encoder runs once
  per prompt, in generation and in every update).

- `floor` (with `--algorithms ppo,grpo,floor`): no PPO at all, only its update's work, 4 passes
  of 4 minibatches of 4 prompts with 48 response tokens, each a forward, backward and AdamW step of
  the policy (`fast_t5`, fused AdamW). 16 / its time is what PPO's samples/s could reach if
  sampling, scoring and the rollout's log-probs cost nothing; `--floor-bf16` runs it under bf16
  autocast.

Each repeat runs every part in its own process, interleaved (ours, the peer, ours, ...), so machine
load falls on all alike. JSON lines out, then a summary: median and range of samples/s and the
ratio to the peer's per repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import config_option  # noqa: E402
from workload import _words, tiny_t5  # noqa: E402


def prompts(seed: int, n: int, n_bytes: int = 300) -> list[str]:
    """`n` prompts of `n_bytes` bytes of the workload's words."""
    rng = random.Random(seed)
    return [_words(rng, n_bytes) for _ in range(n)]


def run_ours(algorithm: str, steps: int, warmup: int, threads: int, seed: int) -> dict:
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader

    from lmgcot.rl.kl import FixedKLController
    from lmgcot.rl.module import RationaleRefiner

    torch.set_num_threads(threads)
    model, tok = tiny_t5(seed)
    model.generation_config.suppress_tokens = [tok.eos_token_id]
    k = 8 if algorithm == "grpo" else 1
    questions = prompts(seed, 16 // k)

    def reward(batch, rationales, token_logprobs):
        scores = [r.encode().count(b"e") / max(len(r.encode()), 1) for r in rationales]
        return {"total": scores}

    # conf/rl/default.yaml's optimiser at the peer's learning rate.
    options = OmegaConf.to_container(config_option("rl/default.yaml").optimizer)
    options["lr"] = 1.4e-5
    refiner = RationaleRefiner(
        model,
        tok,
        reward,
        optimizer=instantiate(options),
        kl_controller=FixedKLController(0.2),
        algorithm=algorithm,
        samples_per_question=k,
        critic="shared",
        kl_in_reward=algorithm == "ppo",
        ppo_epochs=4,
        minibatch_size=4 if algorithm == "ppo" else 8,
        max_new_tokens=48,
    )
    marks: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, *args) -> None:
            marks.append(time.perf_counter())

    loader = DataLoader(
        [questions] * (warmup + steps), batch_size=None, collate_fn=lambda q: {"inputs": q}
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_steps=refiner.steps_per_rollout(len(questions)) * (warmup + steps),
        callbacks=[Clock()],
    )
    trainer.fit(refiner, train_dataloaders=loader)
    measured = marks[warmup - 1 :] if warmup else marks
    wall = measured[-1] - measured[0]
    n = len(measured) - 1
    return {
        "bench": f"lmgcot_{algorithm}",
        "steps": n,
        "wall_s": round(wall, 3),
        "samples_per_s": round(16 * n / wall, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": threads,
        "optimizer": {k: v for k, v in options.items() if not k.startswith("_")},
        "fast_forward": refiner.fast_forward,
    }


def run_floor(steps: int, warmup: int, threads: int, seed: int, bf16: bool) -> dict:
    import torch

    from lmgcot.student import fast_t5

    torch.set_num_threads(threads)
    model, tok = tiny_t5(seed)
    model.eval()  # no dropout, as in the refiner's update; gradients still flow
    encoded = tok(prompts(seed, 16), return_tensors="pt", padding=True)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    responses = torch.randint(3, len(tok), (16, 48), generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.4e-5, fused=True)
    seconds = []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        for _epoch in range(4):
            for rows in torch.arange(16).split(4):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    states = fast_t5.decode(
                        model,
                        fast_t5.encode(model, ids[rows], mask[rows]),
                        mask[rows],
                        responses[rows],
                    )
                    logits = fast_t5.lm_logits(model, states)
                torch.logsumexp(logits.float(), -1).mean().backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            seconds.append(time.perf_counter() - t0)
    update = statistics.median(seconds)
    return {
        "bench": "ppo_update_floor",
        "steps": steps,
        "update_s_median": round(update, 3),
        "samples_per_s": round(16 / update, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": threads,
        "bf16": bf16,
    }


def child(argv: list[str]) -> dict:
    """Run `argv` and return its last JSON line with "samples_per_s" (the summary)."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed:\n{proc.stderr[-2000:]}")
    rows = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    summary = [r for r in rows if "samples_per_s" in r]
    if not summary:
        raise SystemExit(f"{shlex.join(argv)} printed no samples_per_s")
    return summary[-1]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--algorithms", default="ppo,grpo")
    ap.add_argument("--peer", help="a peer's command line; its last JSON line with samples_per_s")
    ap.add_argument("--floor-bf16", action="store_true", help="the floor under bf16 autocast")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "floor":
        row = run_floor(args.steps, args.warmup, args.threads, args.seed, args.floor_bf16)
        print(json.dumps(row), flush=True)
        return 0
    if args.child:
        row = run_ours(args.child, args.steps, args.warmup, args.threads, args.seed)
        print(json.dumps(row), flush=True)
        return 0
    env_threads = ["env", f"OMP_NUM_THREADS={args.threads}"]
    results: dict[str, list[dict]] = {}
    for repeat in range(args.repeats):
        parts = {
            algo: [
                *env_threads,
                sys.executable,
                __file__,
                f"--child={algo}",
                f"--steps={args.steps}",
                f"--warmup={args.warmup}",
                f"--threads={args.threads}",
                f"--seed={args.seed}",
                *(["--floor-bf16"] if args.floor_bf16 else []),
            ]
            for algo in args.algorithms.split(",")
        }
        if args.peer:
            parts["peer"] = [*env_threads, *shlex.split(args.peer), f"--threads={args.threads}"]
        for name, cmd in parts.items():
            row = {"part": name, "repeat": repeat, **child(cmd)}
            print(json.dumps(row), flush=True)
            results.setdefault(name, []).append(row)
    summary = {"load": os.getloadavg()[0]}
    for name, rows in results.items():
        sps = [r["samples_per_s"] for r in rows]
        summary[name] = {
            "samples_per_s_median": statistics.median(sps),
            "range": [min(sps), max(sps)],
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rows),
        }
        if "peer" in results and name != "peer":
            ratios = [
                a["samples_per_s"] / b["samples_per_s"] for a, b in zip(rows, results["peer"])
            ]
            summary[name]["ratio_to_peer_median"] = round(statistics.median(ratios), 3)
            summary[name]["ratio_to_peer_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
    print(json.dumps({"summary": summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
