"""Answer prediction by each method, all with the same frozen large LM, scored with EM/F1.

standard         the large LM answers from context + question
cot              the large LM writes its own rationale, then answers given it
lm_guided_kd     the distilled student writes a rationale (greedy); the large LM answers given it
lm_guided_kd_sc  self-consistency: k sampled student rationales, one large-LM answer each, majority
                 vote over normalised answers (ties go to the answer seen first)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from lmgcot.data.example import Example
from lmgcot.eval.answers import extract_answer, majority_vote, split_rationale_answer
from lmgcot.eval.metrics import aggregate, best_over_golds
from lmgcot.llm.base import GenerationParams, LargeLM
from lmgcot.prompts import PromptTemplates

# Every method, in the order tables list them (the names results.json uses).
METHODS = (
    "standard",
    "cot",
    "lm_guided_kd",
    "lm_guided_kd_sc",
    "lm_guided_rl",
    "lm_guided_rl_sc",
)


@dataclass
class Prediction:
    """One question's outcome. `rationales` and `answers` hold every sample for self-consistency."""

    id: str
    question: str
    gold: str
    prediction: str
    em: float
    f1: float
    rationales: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    vote_share: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def answer_standard(
    examples: list[Example], large_lm: LargeLM, prompts: PromptTemplates, max_new_tokens: int = 32
) -> list[Prediction]:
    params = GenerationParams(max_new_tokens=max_new_tokens)
    replies = large_lm.generate([prompts.standard_prompt(e) for e in examples], params)
    return [_score(e, [], [extract_answer(r[0].text)]) for e, r in zip(examples, replies)]


def large_lm_rationales(
    examples: list[Example], large_lm: LargeLM, prompts: PromptTemplates, max_new_tokens: int = 256
) -> list[str]:
    """The large LM's own CoT rationale per example (greedy), its concluding answer removed."""
    params = GenerationParams(max_new_tokens=max_new_tokens)
    replies = large_lm.generate([prompts.cot_prompt(e) for e in examples], params)
    return [split_rationale_answer(r[0].text)[0] for r in replies]


def answer_with_rationales(
    examples: list[Example],
    rationales: list[list[str]],
    large_lm: LargeLM,
    prompts: PromptTemplates,
    max_new_tokens: int = 32,
) -> list[Prediction]:
    """The large LM answers once per rationale; several rationales per example are majority-voted."""
    params = GenerationParams(max_new_tokens=max_new_tokens)
    flat = [prompts.guided_prompt(e, r) for e, rs in zip(examples, rationales) for r in rs]
    replies = iter(large_lm.generate(flat, params))
    out = []
    for example, rs in zip(examples, rationales):
        answers = [extract_answer(next(replies)[0].text) for _ in rs]
        out.append(_score(example, rs, answers))
    return out


def summarize(predictions: list[Prediction], n_gold: int) -> dict:
    """{"em", "f1", "n"} over all gold examples, plus the mean vote share for voted methods."""
    summary = aggregate([(p.em, p.f1) for p in predictions], n_gold)
    shares = [p.vote_share for p in predictions if p.vote_share is not None]
    if shares:
        summary["vote_share"] = sum(shares) / len(shares)
    return summary


def _score(example: Example, rationales: list[str], answers: list[str]) -> Prediction:
    if len(answers) == 1:
        prediction, share = answers[0], None
    else:
        prediction, share = majority_vote(answers)
    em, f1 = best_over_golds(prediction, example.gold_answers)
    return Prediction(
        id=example.id,
        question=example.question,
        gold=example.answer,
        prediction=prediction,
        em=em,
        f1=f1,
        rationales=list(rationales),
        answers=list(answers),
        vote_share=share,
    )
