"""Does PPO on the task reward carry over to questions it did not train on? Run by hand.

    python benchmarks/rl_transfer.py --student RUN/distill/student --prompts fresh
    python benchmarks/rl_transfer.py --student RUN/distill/student --prompts fixed:64

Takes a distilled student of the offline default (synthetic data, simulated large LM, `reward=task`)
and runs the refine stage's RL (`RationaleRefiner`, settings from `lmgcot/conf/rl/default.yaml` unless
overridden) with one of three prompt sets:

- `train`: the train questions, as the refine stage does (the student was distilled on them);
- `fresh`: a stream of new questions from the same generator, none seen in distillation and none
  repeated, the most favourable case for learning a skill that transfers;
- `fixed:N`: N new questions, repeated: can PPO raise the reward on questions it sees again?

Prints the rollout reward, KL and entropy in blocks of 10 rollouts, and the greedy task reward on
the val and test splits before, during (`--eval-every`) and after.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from lmgcot.cli import CONFIG_DIR
from lmgcot.llm.simulated import SimulatedLargeLM
from lmgcot.pipeline.builders import build_refiner, build_student
from lmgcot.prompts import PromptTemplates
from lmgcot.rewards.task import task_reward
from lmgcot.student.generate import generate_rationales

# Importing the CLI registers the config schemas the YAML options extend.
CONF = CONFIG_DIR


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--student", required=True, help="a distilled student directory (HF format)")
    ap.add_argument("--prompts", default="fresh", help="train | fresh | fixed:N")
    ap.add_argument("--rollouts", type=int, default=150)
    ap.add_argument("--lr", type=float, default=None, help="default: rl.optimizer.lr")
    ap.add_argument("--kl", type=float, default=None, help="fixed KL coefficient (rl.kl.coef)")
    ap.add_argument(
        "--samples-per-question", type=int, default=None, help="rl.samples_per_question"
    )
    ap.add_argument("--rollout-batch-size", type=int, default=None, help="rl.rollout_batch_size")
    ap.add_argument("--minibatch-size", type=int, default=None, help="rl.minibatch_size")
    ap.add_argument("--eval-every", type=int, default=0, help="rollouts between evaluations")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("config", overrides=[f"seed={args.seed}"])
    dataset = instantiate(cfg.dataset)
    splits = dataset.load_splits()
    prompts = PromptTemplates(**OmegaConf.to_container(cfg.prompt), context_mode=dataset.context)
    large_lm = SimulatedLargeLM()
    r = cfg.rl
    if args.rollout_batch_size:
        r.rollout_batch_size = args.rollout_batch_size
    if args.minibatch_size:
        r.minibatch_size = args.minibatch_size
    student = build_student(cfg.student, args.seed, pretrained=args.student)

    k = args.samples_per_question or int(r.samples_per_question)
    per_rollout = int(r.rollout_batch_size) // k
    needed = args.rollouts * per_rollout
    if args.prompts == "train":
        pool = list(splits.train)
    elif args.prompts == "fresh" or args.prompts.startswith("fixed:"):
        # The same generator with a longer train split: past the real one, all new questions.
        n_train = len(splits.train)
        extra = needed if args.prompts == "fresh" else int(args.prompts.split(":", 1)[1])
        pool = instantiate(cfg.dataset, n_train=n_train + extra).load_splits().train[n_train:]
    else:
        ap.error(f"--prompts {args.prompts!r}: train, fresh or fixed:N")
    order = (pool * math.ceil(needed / len(pool)))[:needed]
    by_input = {prompts.student_input(x): x for x in pool}

    def reward_fn(batch, rationales, token_logprobs):
        examples = [by_input[i] for i in batch["inputs"]]
        scores, _ = task_reward(examples, rationales, large_lm, prompts)
        return {"task": scores, "total": scores}

    def held_out(split) -> float:
        examples = list(split)
        out = generate_rationales(student, [prompts.student_input(x) for x in examples])
        scores, _ = task_reward(examples, [o[0] for o in out], large_lm, prompts)
        return sum(scores) / len(scores)

    if args.lr:
        r.optimizer.lr = args.lr
    if args.kl is not None:
        r.kl.coef = args.kl
    r.samples_per_question = k
    refiner = build_refiner(r, student, reward_fn)
    inputs = [prompts.student_input(x) for x in order]
    loader = DataLoader(inputs, batch_size=per_rollout, collate_fn=lambda xs: {"inputs": list(xs)})
    evaluations = [(0, held_out(splits.val), held_out(splits.test))]
    print(f"before: val {evaluations[0][1]:.3f}  test {evaluations[0][2]:.3f}", flush=True)

    class Progress(pl.Callback):
        def __init__(self) -> None:
            self.rows: list[dict] = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            m = trainer.callback_metrics
            self.rows.append(
                {key: float(m[key]) for key in ("rewards/task/mean", "rl/kl", "rl/entropy")}
            )
            n = len(self.rows)
            if args.eval_every and n % args.eval_every == 0 and n < args.rollouts:
                evaluations.append((n, held_out(splits.val), held_out(splits.test)))
                print(
                    f"rollout {n}: val {evaluations[-1][1]:.3f}  test {evaluations[-1][2]:.3f}",
                    flush=True,
                )

    progress = Progress()
    steps_per_rollout = refiner.steps_per_rollout(per_rollout)
    trainer = pl.Trainer(
        max_steps=args.rollouts * steps_per_rollout,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[progress],
    )
    t0 = time.perf_counter()
    trainer.fit(refiner, loader)
    seconds = time.perf_counter() - t0
    evaluations.append((args.rollouts, held_out(splits.val), held_out(splits.test)))

    print(
        f"prompts {args.prompts}: {len(pool)} questions, {args.rollouts} rollouts of "
        f"{r.rollout_batch_size} ({k} per question), {seconds:.0f} s, {args.threads} threads"
    )
    for key in ("rewards/task/mean", "rl/kl", "rl/entropy"):
        values = [row[key] for row in progress.rows]
        blocks = [
            sum(values[i : i + 10]) / len(values[i : i + 10]) for i in range(0, len(values), 10)
        ]
        print(f"{key:18s}", " ".join(f"{b:.3f}" for b in blocks))
    for n, val, test in evaluations:
        print(f"greedy task reward after {n:4d} rollouts: val {val:.3f}  test {test:.3f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    sys.exit(main(sys.argv[1:]))
