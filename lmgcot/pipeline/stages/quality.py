"""Rationale quality at evaluation: the mean aspect scores (reward.scorer) of each rationale source
evaluated in the run, and each test question's scores in eval/quality/<source>.jsonl."""

from __future__ import annotations

import logging

from lmgcot.pipeline.builders import load_student
from lmgcot.pipeline.fingerprints import fingerprint, hash_parts
from lmgcot.pipeline.scoring import reward_scorer, student_inputs
from lmgcot.rewards.judge import ASPECT_NAMES
from lmgcot.rewards.scorer import mean_scores
from lmgcot.student.generate import score_rationales
from lmgcot.student.models import Student
from lmgcot.utils.io import write_jsonl

log = logging.getLogger("lmgcot")

# Rationale sources scored: the method whose (first) rationales are scored.
QUALITY_SOURCES = ("cot", "lm_guided_kd", "lm_guided_rl")


def quality_fingerprint(cfg, method_fp: str, distill_fp: str | None) -> str:
    """A source's scores depend on its predictions, the reward config, the large LM that may judge
    them, and (fluency) the distilled student."""
    return hash_parts(method_fp, fingerprint(cfg, ("reward", "large_lm")), distill_fp or "")


def rationale_quality(ctx, preds_by_method: dict, students: dict[str, Student]) -> None:
    """A source's rationales are its method's (first) rationale per test question. Fluency under
    the `auto` scorer is the likelihood under the distilled student (the RL stage's reference
    model), so it is left out when no distilled student exists."""
    sources = [m for m in QUALITY_SOURCES if m in preds_by_method]
    if not sources:
        return
    cfg = ctx.cfg
    scorer = reward_scorer(ctx, cfg)
    reference: Student | None = students.get("distill")
    if reference is None and scorer.scorer == "auto" and ctx.run.distill.done:
        reference = load_student(cfg, ctx.run.distill)
    by_id = {x.id: x for x in ctx.splits.test}
    for source in sources:
        preds = [p for p in preds_by_method[source] if p.rationales and p.id in by_id]
        examples = [by_id[p.id] for p in preds]
        rationales = [p.rationales[0] for p in preds]
        logprobs = None
        if reference is not None and scorer.scorer == "auto":
            inputs = student_inputs(ctx, cfg, examples)
            logprobs = score_rationales(reference, inputs, rationales)
        comps, failures = scorer.components(
            examples, rationales, names=ASPECT_NAMES, token_logprobs=logprobs
        )
        if failures:
            log.warning(
                "evaluate: %s: %d judge replies could not be parsed (left out of the means)",
                source,
                len(failures),
            )
        means = {k: round(v, 6) for k, v in mean_scores(comps).items()}
        ctx.quality[source] = means
        ctx.provenance["rationale_quality"][source] = quality_fingerprint(
            cfg, ctx.provenance["methods"][source], ctx.run.distill.fingerprint
        )
        # Per question, so that sources and runs can be compared paired (lmgcot-compare).
        write_jsonl(
            ctx.run.eval.quality(source),
            ({"id": p.id, **{k: v[i] for k, v in comps.items()}} for i, p in enumerate(preds)),
        )
        log.info(
            "evaluate: %s rationale quality: %s",
            source,
            " ".join(f"{k}={v:.3f}" for k, v in means.items()),
        )
