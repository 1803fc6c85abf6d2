"""The `judge` scorer: the large LM rates a rationale on the eight aspects, 1-5 each.

The prompt asks for one line per aspect, `aspect: N`. The parser accepts the usual ways a model
bends that format (any case, markdown bold or list markers, "Factuality - 4", "factuality: 4/5",
prose before or after) and refuses anything that leaves a score in doubt: a missing aspect, a
score outside 1-5 or not a whole number, or an aspect given twice with different scores.
Replies that cannot be parsed are not guessed at: `judge_scores` gives those rationales None and
returns a record of each failure, so the caller can log them and the reward mix can count them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lmgcot.data.example import Example
from lmgcot.errors import LmgcotError
from lmgcot.llm.base import GenerationParams, LargeLM
from lmgcot.prompts import JUDGE_PREFIX, render_paragraph
from lmgcot.rewards.aspects import ASPECT_DESCRIPTIONS, ASPECTS

ASPECT_NAMES: tuple[str, ...] = tuple(ASPECTS)
MIN_SCORE, MAX_SCORE = 1, 5


class JudgeParseError(LmgcotError):
    """A judge reply that does not give exactly one 1-5 score for every aspect."""

    def __init__(self, reply: str, problem: str):
        preview = reply.strip().replace("\n", " | ")[:120]
        super().__init__(f"judge reply could not be parsed: {problem} (reply: {preview!r})")
        self.reply, self.problem = reply, problem


def build_judge_prompt(
    example: Example, rationale: str, max_context_chars: int | None = None
) -> str:
    """The rating prompt for one rationale: context, question, rationale, aspects, strict format."""
    context = "\n".join(render_paragraph(p) for p in example.context)
    if max_context_chars is not None and len(context) > max_context_chars:
        context = context[:max_context_chars]
    aspects = "\n".join(f"- {name}: {ASPECT_DESCRIPTIONS[name]}" for name in ASPECT_NAMES)
    lines = "\n".join(f"{name}: N" for name in ASPECT_NAMES)
    return (
        f"{JUDGE_PREFIX} written to help answer a multi-hop question. Rate the "
        f"rationale on each aspect below, from {MIN_SCORE} (very poor) to {MAX_SCORE} "
        "(excellent).\n\n"
        f"Aspects:\n{aspects}\n\n"
        f"Context:\n{context}\n\n"
        f"Question: {example.question}\n"
        f"Rationale: {' '.join(rationale.split()) or '(empty)'}\n\n"
        f"Reply with exactly {len(ASPECT_NAMES)} lines and nothing else, one per aspect, in this "
        f"format, where N is a whole number from {MIN_SCORE} to {MAX_SCORE}:\n{lines}\n"
    )


def parse_judge_reply(reply: str) -> dict[str, int]:
    """{aspect: score 1-5} for all eight aspects, or JudgeParseError naming what is wrong.

    A score line starts (after optional list markers such as "-", "*" or "1.") with an aspect
    name, then ":", "=", "-" or "is", then a whole number, optionally "/5". Case and markdown
    emphasis are ignored; lines that are not score lines are skipped. An aspect repeated with the
    same score is accepted.
    """
    scores: dict[str, int] = {}
    for raw in reply.splitlines():
        line = _MARKDOWN.sub("", raw).strip().lower()
        m = _SCORE_LINE.match(line)
        if m is None or m.group("name") not in ASPECTS:
            continue
        name, value = m.group("name"), m.group("score")
        if not re.fullmatch(r"[+-]?\d+", value):
            raise JudgeParseError(reply, f"{name}: score {value} is not a whole number")
        if m.group("den") is not None and int(m.group("den")) != MAX_SCORE:
            raise JudgeParseError(reply, f"{name}: score {value}/{m.group('den')} is not out of 5")
        score = int(value)
        if not MIN_SCORE <= score <= MAX_SCORE:
            raise JudgeParseError(
                reply, f"{name}: score {score} is outside {MIN_SCORE}-{MAX_SCORE}"
            )
        if name in scores and scores[name] != score:
            raise JudgeParseError(
                reply, f"{name}: given twice with different scores ({scores[name]} and {score})"
            )
        scores[name] = score
    missing = [name for name in ASPECT_NAMES if name not in scores]
    if missing:
        raise JudgeParseError(reply, f"no score for {', '.join(missing)}")
    return scores


def judge_scores(
    examples: Sequence[Example],
    rationales: Sequence[str],
    large_lm: LargeLM,
    params: GenerationParams | None = None,
    max_context_chars: int | None = None,
) -> tuple[list[dict[str, float] | None], list[dict]]:
    """Ask the large LM to rate each rationale; scores scaled to [0, 1] by (n - 1) / 4.

    Returns (scores, failures). `scores[i]` is {aspect: value} for rationale i, or None when its
    reply could not be parsed; `failures` has one record per such reply: {"index", "id", "reply",
    "problem"}. Calls go through `large_lm.generate`, so they are cached. The default params are
    greedy with room for eight short lines.
    """
    if len(examples) != len(rationales):
        raise ValueError(f"{len(rationales)} rationales for {len(examples)} examples")
    params = params or GenerationParams(max_new_tokens=64)
    prompts = [build_judge_prompt(e, r, max_context_chars) for e, r in zip(examples, rationales)]
    replies = [c[0].text for c in large_lm.generate(prompts, params)] if prompts else []
    scores: list[dict[str, float] | None] = []
    failures: list[dict] = []
    for i, (example, reply) in enumerate(zip(examples, replies)):
        try:
            parsed = parse_judge_reply(reply)
        except JudgeParseError as err:
            scores.append(None)
            failures.append({"index": i, "id": example.id, "reply": reply, "problem": err.problem})
            continue
        span = MAX_SCORE - MIN_SCORE
        scores.append({k: (v - MIN_SCORE) / span for k, v in parsed.items()})
    return scores, failures


def judge_components(
    scores: Sequence[dict[str, float] | None],
) -> dict[str, list[float | None]]:
    """Per-aspect columns of `judge_scores` output, None kept, ready for `RewardMix.combine`."""
    return {name: [s[name] if s is not None else None for s in scores] for name in ASPECT_NAMES}


# -- helpers -------------------------------------------------------------------------------------

# Markdown emphasis and code marks; removing them turns "**Factuality**: **4**" into a plain line.
_MARKDOWN = re.compile(r"[*_`#]+")
_SCORE_LINE = re.compile(
    r"^(?:[-+\u2022>]|\d+[.)])?\s*"  # an optional list marker
    r"(?P<name>[a-z]+)\s*"
    r"(?:[:=\-\u2013\u2014]|\bis\b)\s*"  # ":", "=", "-", en/em dash, or "is"
    r"(?P<score>[+-]?\d+(?:\.\d+)?)"
    r"(?:\s*/\s*(?P<den>\d+))?"
)
