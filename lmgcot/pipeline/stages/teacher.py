"""teacher: CoT rationales from the large LM for the train and val splits (train -> fit,
val -> val/loss)."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from lmgcot.artifacts import StageDir
from lmgcot.errors import ConfigError
from lmgcot.pipeline.fingerprints import TEST_ONLY
from lmgcot.pipeline.stage import Stage
from lmgcot.teacher import (
    TeacherRationale,
    few_shot_exemplars,
    sample_rationales,
    teacher_stats,
)
from lmgcot.utils.io import read_jsonl, write_jsonl

log = logging.getLogger("lmgcot")

DIVERSE_TEMPERATURE = 0.7  # teacher.temperature=null with num_samples > 1 (Fine-tune-CoT's value)


def teacher_temperature(t: DictConfig) -> float:
    """teacher.temperature, where null means greedy for one sample and Fine-tune-CoT's 0.7 for
    diverse reasoning (num_samples > 1)."""
    if t.get("temperature") is None:
        return DIVERSE_TEMPERATURE if t.num_samples > 1 else 0.0
    return float(t.temperature)


def read_rationales(out: StageDir, split: str) -> list[TeacherRationale]:
    return [TeacherRationale(**r) for r in read_jsonl(out / f"{split}.jsonl")]


def teacher_exemplars(ctx, cfg: DictConfig) -> list:
    """Few-shot CoT exemplars (teacher.prompting=few_shot_cot): training questions with a gold
    rationale; one clear line when the dataset has none."""
    t = cfg.teacher
    if t.prompting != "few_shot_cot":
        return []
    shots = few_shot_exemplars(ctx.splits.train, t.few_shot_k, cfg.dataset.seed)
    if not shots:
        raise ConfigError(
            f"teacher.prompting=few_shot_cot: dataset={ctx.dataset_name} has no training question "
            "with a gold rationale to use as an exemplar; use teacher.prompting=zero_shot_cot"
        )
    return shots


def split_rationales(ctx, cfg: DictConfig, examples: list, exemplars: list) -> list:
    """One split's rationales through `ctx.large_lm` (the run's, or a plan's that sends nothing)."""
    t = cfg.teacher
    shot_ids = {x.id for x in exemplars}
    return sample_rationales(
        # An exemplar's own question would be answered from the prompt: not a fair sample.
        [e for e in examples if e.id not in shot_ids],
        ctx.large_lm,
        ctx.prompts,
        num_samples=t.num_samples,
        temperature=teacher_temperature(t),
        top_p=float(t.top_p),
        max_new_tokens=t.max_new_tokens,
        strip_answer=t.strip_answer,
        prompting=t.prompting,
        exemplars=exemplars,
        answer_max_new_tokens=t.answer_max_new_tokens,
    )


def _body(ctx, cfg: DictConfig, out: StageDir) -> dict:
    stats = {}
    exemplars = teacher_exemplars(ctx, cfg)
    for split, examples in (("train", ctx.splits.train), ("val", ctx.splits.val)):
        rationales = split_rationales(ctx, cfg, examples, exemplars)
        stats[split] = teacher_stats(rationales, cfg.teacher.filter_correct)
        write_jsonl(out / f"{split}.jsonl", (r.to_dict() for r in rationales))
        log.info(
            "teacher: %s: %d rationales, %.1f%% correct, %d kept (%d of %d questions)",
            split,
            len(rationales),
            100 * stats[split]["correct_share"],
            stats[split]["kept"],
            stats[split]["questions_kept"],
            stats[split]["questions"],
        )
    if exemplars:
        stats["exemplars"] = [x.id for x in exemplars]
    return stats


TEACHER = Stage(
    "teacher",
    reads=("dataset", "large_lm", "prompt", "teacher"),
    body=_body,
    artifacts=("train.jsonl", "val.jsonl"),
    ignores=TEST_ONLY,
)
