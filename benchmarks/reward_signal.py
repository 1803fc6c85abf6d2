"""Which reward components can tell a student's samples of one question apart? Run by hand.

    python benchmarks/reward_signal.py --student RUN/distill/student
    python benchmarks/reward_signal.py --student RUN/distill/student --no-gate
    python benchmarks/reward_signal.py --student DIR --teacher-rationales RUN/teacher/train.jsonl \\
        --split val reward=all

PPO with group-normalised scores (`rl.score_norm=group`), like GRPO, learns only from how the
samples of one question differ: a component that gives every sample of a question the same score
adds nothing to the gradient, however its mean moves between questions. This samples `--k`
rationales per question from a distilled student (temperature 1, no top-k or top-p truncation: the
refine stage's rollouts), scores every component with `RewardScorer` (the task reward, the eight
aspects, and the `wellformed` gate; fluency under the student itself, the refine stage's reference
model), and prints per component:

- `mean`, `std`: over all samples;
- `within`: the mean over questions of the standard deviation of its k samples (what group
  normalisation sees);
- `between`: the standard deviation of the question means (what it removes);
- `spread`: the share of questions whose samples do not all score the same;
- `greedy`: the mean score of the greedy rationales;
- `above`, `below`: the share of samples scoring above (below) their question's greedy rationale,
  and `best-greedy`: the mean over questions of the best sample's score minus the greedy one's.
  RL is judged on greedy rationales, so it can raise a component only where samples beat the
  greedy rationale: where they only fall below it, RL sharpens the sampling towards a mode that
  does not change;
- the verdict: "carries signal" when `within` >= `--min-within-std` (0.02 by default: components
  live on [0, 1], and the task reward, the signal that matters, moves by whole points within a
  question wherever the student is unsure; a component that moves samples by less than 2 points
  is swamped by it in a mix, and alone its group-normalised noise is amplified to unit scale).

Also the mean wellformedness of the student's greedy rationales, next to the sampled ones'.
JSON lines on stdout, a readable table on stderr. The Hydra config is the project's (`conf/`) with
any overrides given after the options; the dataset, prompts and large LM must be the ones the
student was distilled with.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmgcot.cli import CONFIG_DIR
from lmgcot.pipeline.builders import build_student
from lmgcot.prompts import PromptTemplates
from lmgcot.rewards.mix import COMPONENTS
from lmgcot.rewards.scorer import WELLFORMED, RewardScorer
from lmgcot.rewards.wellformed import vocabulary_of, wellformedness
from lmgcot.rl.policy_gradient import group_advantages
from lmgcot.student.generate import generate_rationales, score_rationales
from lmgcot.student.objectives import explain_task
from lmgcot.utils.io import read_jsonl

# Importing the CLI registers the config schemas the YAML options extend.
CONF = CONFIG_DIR
NAMES = [*COMPONENTS, WELLFORMED]
# Scores closer than this count as equal when deciding whether a question's samples differ.
SAME = 1e-9


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--student", required=True, help="a distilled student directory (HF format)")
    ap.add_argument("--k", type=int, default=16, help="samples per question")
    ap.add_argument("--questions", type=int, default=64, help="the split's first N questions")
    ap.add_argument("--split", default="train", choices=("train", "val", "test"))
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--no-gate", action="store_true", help="score aspects without the gate")
    ap.add_argument(
        "--teacher-rationales",
        help="a teacher JSONL (RUN/teacher/train.jsonl): its words are the gate's vocabulary",
    )
    ap.add_argument("--min-within-std", type=float, default=0.02)
    ap.add_argument("--show", type=int, default=5, help="print the N least well-formed samples")
    ap.add_argument(
        "--gradients",
        action="store_true",
        help="also: does each component's policy gradient point the same way across questions?",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. reward=all")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("config", overrides=[f"seed={args.seed}", *args.overrides])
    cfg.reward.gate = not args.no_gate
    dataset = instantiate(cfg.dataset)
    examples = list(getattr(dataset.load_splits(), args.split))[: args.questions]
    prompts = PromptTemplates(**OmegaConf.to_container(cfg.prompt), context_mode=dataset.context)
    vocabulary = None
    if args.teacher_rationales:
        vocabulary = vocabulary_of(r["rationale"] for r in read_jsonl(args.teacher_rationales))
    scorer = RewardScorer.from_config(
        cfg.reward,
        instantiate(cfg.large_lm),
        prompts,
        answer_max_new_tokens=int(cfg.evaluation.answer_max_new_tokens),
        vocabulary=vocabulary,
    )
    student = build_student(cfg.student, args.seed, pretrained=args.student)
    task = explain_task(str(cfg.distill.objective))
    inputs = [prompts.student_input(x, task) for x in examples]

    greedy = [r[0] for r in generate_rationales(student, inputs)]
    sampled = generate_rationales(
        student, inputs, num_samples=args.k, temperature=args.temperature, seed=args.seed
    )
    flat_examples = [x for x in examples for _ in range(args.k)]
    flat_inputs = [i for i in inputs for _ in range(args.k)]
    flat = [r for rs in sampled for r in rs]
    logprobs = score_rationales(student, flat_inputs, flat)
    comps, failures = scorer.components(flat_examples, flat, NAMES, token_logprobs=logprobs)
    greedy_logprobs = score_rationales(student, inputs, greedy)
    greedy_comps, _ = scorer.components(examples, greedy, NAMES, token_logprobs=greedy_logprobs)

    gate = "on" if scorer.gate else "off"
    rows = []
    for name in NAMES:
        per_question = [
            [v for v in comps[name][q * args.k : (q + 1) * args.k] if v is not None]
            for q in range(len(examples))
        ]
        stats = {
            **signal_stats(per_question),
            **against_greedy(per_question, greedy_comps[name]),
        }
        signal = stats["within_std"] >= args.min_within_std
        verdict = "carries signal" if signal else "no within-question signal"
        row = {"component": name, "gate": gate, **stats, "verdict": verdict}
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        "summary": True,
        "gate": gate,
        "student": args.student,
        "split": args.split,
        "questions": len(examples),
        "k": args.k,
        "temperature": args.temperature,
        "vocabulary": len(vocabulary) if vocabulary is not None else None,
        "greedy_wellformed": statistics.fmean(wellformedness(examples, greedy, vocabulary)),
        "sampled_wellformed": statistics.fmean(comps[WELLFORMED]),
        "judge_failures": len(failures),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(summary), flush=True)
    print_table(rows, summary, sys.stderr)
    if args.gradients:
        print("\ngradient direction (GRPO advantages, token mean):", file=sys.stderr)
        for name in NAMES:
            scores = [0.0 if v is None else float(v) for v in comps[name]]
            row = {
                "component": name,
                **gradient_agreement(student, flat_inputs, flat, scores, args.k),
            }
            print(json.dumps(row), flush=True)
            print(
                f"  {name:12s} cos(question, question) {row['cos_between_questions']:+.3f}   "
                f"cos(half, half) {row['cos_halves']:+.3f}",
                file=sys.stderr,
            )
    if args.show:
        worst = sorted(zip(comps[WELLFORMED], flat), key=lambda p: p[0])[: args.show]
        print(f"\nleast well-formed of the {len(flat)} samples:", file=sys.stderr)
        for score, text in worst:
            print(f"  {score:.3f}  {text!r}", file=sys.stderr)
    return 0


def gradient_agreement(
    student, inputs: list[str], rationales: list[str], scores: list[float], k: int
) -> dict:
    """How far one component's policy gradient agrees across questions.

    Each question's gradient is that of -sum_i A_i * mean_t log p(token) over its k samples, with
    GRPO's group-normalised advantages A. `cos_between_questions`: the mean cosine between two
    different questions' gradients (0: what one question teaches says nothing about another);
    `cos_halves`: the cosine between the summed gradients of the first and second half of the
    questions (the batch gradient's agreement with itself; near 0 means the update is mostly noise
    at this batch size).
    """
    model, tok = student.model, student.tokenizer
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    n_questions = len(inputs) // k
    groups = torch.arange(n_questions).repeat_interleave(k)
    adv = group_advantages(torch.tensor(scores, dtype=torch.float64), groups, "group").float()
    grads = []
    for q in range(n_questions):
        rows = slice(q * k, (q + 1) * k)
        src, tgt = (
            tok(texts[rows], return_tensors="pt", padding=True, truncation=True, max_length=n)
            for texts, n in (
                (inputs, student.max_source_length),
                (rationales, student.max_target_length),
            )
        )
        labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)
        logits = model(**src, labels=labels).logits
        mask = (labels != -100).float()
        logp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        per_sample = (logp * mask).sum(1) / mask.sum(1).clamp_min(1)
        loss = -(adv[rows] * per_sample).mean()
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    g = torch.stack(grads).double()
    norms = g.norm(dim=1).clamp_min(1e-12)
    cos = (g @ g.T) / (norms[:, None] * norms[None, :])
    nonzero = norms > 1e-9
    off = cos[nonzero][:, nonzero]
    m = int(nonzero.sum())
    between = float((off.sum() - off.diagonal().sum()) / max(1, m * (m - 1)))
    half = n_questions // 2
    a, b = g[:half].sum(0), g[half:].sum(0)
    halves = float(a @ b / (a.norm() * b.norm()).clamp_min(1e-12))
    return {"cos_between_questions": between, "cos_halves": halves}


def signal_stats(per_question: list[list[float]]) -> dict:
    """mean, std, within_std, between_std and spread_share of scores grouped by question
    (population standard deviations; questions without scores left out)."""
    groups = [g for g in per_question if g]
    values = [v for g in groups for v in g]
    return {
        "questions": len(groups),
        "mean": statistics.fmean(values),
        "std": statistics.pstdev(values),
        "within_std": statistics.fmean(statistics.pstdev(g) for g in groups),
        "between_std": statistics.pstdev(statistics.fmean(g) for g in groups),
        "spread_share": statistics.fmean(max(g) - min(g) > SAME for g in groups),
    }


def against_greedy(per_question: list[list[float]], greedy: list[float | None]) -> dict:
    """above_greedy, below_greedy (shares of samples) and best_minus_greedy (mean over
    questions) of each question's samples against its greedy rationale's score."""
    pairs = [(g, s) for g, s in zip(greedy, per_question) if g is not None and s]
    scored = [g for g in greedy if g is not None]
    n = sum(len(s) for _, s in pairs)
    return {
        "above_greedy": sum(v > g + SAME for g, s in pairs for v in s) / n,
        "below_greedy": sum(v < g - SAME for g, s in pairs for v in s) / n,
        "best_minus_greedy": statistics.fmean(max(s) - g for g, s in pairs),
        "greedy_mean": statistics.fmean(scored) if scored else float("nan"),
    }


def print_table(rows: list[dict], summary: dict, out) -> None:
    print(
        f"reward signal: {summary['questions']} {summary['split']} questions x {summary['k']} "
        f"samples (T={summary['temperature']:g}), gate {summary['gate']}, "
        f"{summary['seconds']:.0f} s",
        file=out,
    )
    print(
        f"{'component':12s} {'mean':>6s} {'std':>6s} {'within':>6s} {'between':>7s} "
        f"{'spread':>6s} {'greedy':>6s} {'above':>6s} {'below':>6s} {'best-greedy':>11s}  verdict",
        file=out,
    )
    for r in rows:
        print(
            f"{r['component']:12s} {r['mean']:6.3f} {r['std']:6.3f} {r['within_std']:6.3f} "
            f"{r['between_std']:7.3f} {r['spread_share']:6.2f} {r['greedy_mean']:6.3f} "
            f"{r['above_greedy']:6.3f} "
            f"{r['below_greedy']:6.3f} {r['best_minus_greedy']:+11.3f}  {r['verdict']}",
            file=out,
        )
    print(
        f"wellformed: greedy {summary['greedy_wellformed']:.3f}, "
        f"sampled {summary['sampled_wellformed']:.3f}",
        file=out,
    )


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    sys.exit(main(sys.argv[1:]))
