"""Choosing among a question's k sampled rationales: by quality (best-of-k), by a quality-weighted
vote over the large LM's answers, or by the gold answer (the oracle bound, for analysis only).

The rationales are the same k samples self-consistency (`_sc`) votes over, and the large LM reads
them through the same cached calls, so a run that evaluates several of these methods generates the
samples once and pays for each large-LM call once. Quality is a rationale reward
(`evaluation.select_reward`: a reward option without the task reward, which would need the gold
answer) scored by the run's `reward.scorer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from lmgcot.answers.metrics import normalize_answer
from lmgcot.answers.typed import score_answer
from lmgcot.data.example import Example
from lmgcot.eval.predict import Prediction, answer_with_rationales
from lmgcot.llm.base import LargeLM
from lmgcot.prompts import PromptTemplates

# The reward options (conf/reward/<name>.yaml); those without the task reward can choose.
REWARD_OPTIONS = Path(__file__).resolve().parents[1] / "conf" / "reward"


@dataclass
class Quality:
    """Each sampled rationale's selection score, and the reward components it was made of."""

    scores: list[list[float]]  # [question][sample]
    components: list[dict[str, list[float | None]]]  # [question]{component: [sample]}


# (examples, k rationales per example) -> their Quality.
RateFn = Callable[[list[Example], list[list[str]]], Quality]


def selection_rewards() -> dict[str, dict[str, float]]:
    """{reward option: its weights} for the options that score a rationale without the gold answer
    (no task weight): the values `evaluation.select_reward` takes."""
    out = {}
    for path in sorted(REWARD_OPTIONS.glob("*.yaml")):
        weights = dict(OmegaConf.load(path).get("weights") or {})
        if not weights.get("task"):
            out[path.stem] = {k: float(v) for k, v in weights.items()}
    return out


def best_index(scores: Sequence[float | None]) -> int:
    """The highest-scoring sample; a missing score (unparsable judge reply) ranks last, and a tie
    goes to the earliest sample, so the choice is deterministic."""
    ranked = [float("-inf") if s is None else float(s) for s in scores]
    return max(range(len(ranked)), key=lambda i: (ranked[i], -i))


def vote_index(answers: Sequence[str], weights: Sequence[float] | None = None) -> tuple[int, float]:
    """(index of the winning answer's first sample, its share of the vote): answers vote for their
    normalised class with `weights` (1 each when None). Ties go to the class with more votes, then
    to the class seen first; answers that normalise to "" do not vote. With equal weights this is
    `majority_vote`. No vote at all: (-1, 0.0)."""
    weights = [1.0] * len(answers) if weights is None else [max(0.0, float(w)) for w in weights]
    total_w: dict[str, float] = {}
    count: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, (answer, w) in enumerate(zip(answers, weights, strict=True)):
        key = normalize_answer(answer)
        if not key:
            continue
        total_w[key] = total_w.get(key, 0.0) + w
        count[key] = count.get(key, 0) + 1
        first.setdefault(key, i)
    if not count:
        return -1, 0.0
    winner = min(count, key=lambda k: (-total_w[k], -count[k], first[k]))
    mass = sum(weights)
    share = total_w[winner] / mass if mass > 0 else count[winner] / len(answers)
    return first[winner], share


def oracle_index(ems: Sequence[float], f1s: Sequence[float]) -> int:
    """The sample whose answer scores best against the gold answer (EM, then F1; ties to the
    earliest): an upper bound on any choice among the samples, never a method."""
    return max(range(len(ems)), key=lambda i: (ems[i], f1s[i], -i))


def predict_best(
    examples: list[Example],
    rationales: list[list[str]],
    quality: Quality,
    large_lm: LargeLM,
    prompts: PromptTemplates,
    max_new_tokens: int,
) -> list[Prediction]:
    """Best-of-k: only the highest-quality rationale goes to the large LM (one call a question, the
    very call `_sc` makes for that rationale: a cache hit when it ran)."""
    chosen = [best_index(s) for s in quality.scores]
    answered = answer_with_rationales(
        examples, [[rs[c]] for rs, c in zip(rationales, chosen)], large_lm, prompts, max_new_tokens
    )
    return [
        _prediction(x, rs, p.answers, p.answers[0], scores=s, components=c, chosen=i)
        for x, rs, p, s, c, i in zip(
            examples, rationales, answered, quality.scores, quality.components, chosen
        )
    ]


def predict_weighted(
    examples: list[Example],
    rationales: list[list[str]],
    quality: Quality,
    large_lm: LargeLM,
    prompts: PromptTemplates,
    max_new_tokens: int,
) -> list[Prediction]:
    """Quality-weighted self-consistency: the large LM answers with every rationale and each
    answer's vote weighs its rationale's quality. Every answer's own EM is kept (`answer_em`),
    so the k-curve and the quality deciles can be read from these predictions."""
    answered = answer_with_rationales(examples, rationales, large_lm, prompts, max_new_tokens)
    out = []
    for x, rs, p, s, c in zip(examples, rationales, answered, quality.scores, quality.components):
        scores = [0.0 if v is None else v for v in s]
        i, share = vote_index(p.answers, scores)
        answer = p.answers[i] if i >= 0 else ""
        out.append(_prediction(x, rs, p.answers, answer, scores=s, components=c, share=share))
    return out


def predict_oracle(
    examples: list[Example],
    rationales: list[list[str]],
    large_lm: LargeLM,
    prompts: PromptTemplates,
    max_new_tokens: int,
) -> list[Prediction]:
    """Best-of-k by the task reward against the gold answer: the large LM answers with every
    rationale and the best-scoring answer is kept. A bound for analysis, not a method."""
    answered = answer_with_rationales(examples, rationales, large_lm, prompts, max_new_tokens)
    out = []
    for x, rs, p in zip(examples, rationales, answered):
        ems, f1s = zip(*(score_answer(x.answer_type, a, x.gold_answers) for a in p.answers))
        i = oracle_index(ems, f1s)
        out.append(_prediction(x, rs, p.answers, p.answers[i], chosen=i))
    return out


def _prediction(
    example: Example,
    rationales: list[str],
    answers: list[str],
    answer: str,
    scores: list[float | None] | None = None,
    components: dict | None = None,
    chosen: int | None = None,
    share: float | None = None,
) -> Prediction:
    em, f1 = score_answer(example.answer_type, answer, example.gold_answers)
    # Each answer's own EM, where the large LM answered every rationale.
    per_answer = (
        [score_answer(example.answer_type, a, example.gold_answers)[0] for a in answers]
        if len(answers) == len(rationales)
        else None
    )
    return Prediction(
        id=example.id,
        question=example.question,
        gold=example.answer,
        prediction=answer,
        em=em,
        f1=f1,
        rationales=list(rationales),
        answers=list(answers),
        vote_share=share,
        scores=None if scores is None else list(scores),
        components=components,
        chosen=chosen,
        answer_em=per_answer,
    )
