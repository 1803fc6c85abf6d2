"""The prediction primitives the methods are made of: the large LM answering (alone, or from one
or several rationales), a student answering alone, and scoring by the example's answer type."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from lmgcot.answers.extract import majority_vote, split_rationale_answer
from lmgcot.answers.metrics import aggregate
from lmgcot.answers.typed import read_answer, score_answer
from lmgcot.data.example import Example
from lmgcot.llm.base import GenerationParams, LargeLM
from lmgcot.prompts import PromptTemplates
from lmgcot.student.objectives import Objective


@dataclass
class Prediction:
    """One question's outcome. `rationales` and `answers` hold every sample for self-consistency.
    Methods that choose among samples (`lmgcot.eval.selection`) add each rationale's selection
    score and reward components, the chosen sample, and each answer's own EM."""

    id: str
    question: str
    gold: str
    prediction: str
    em: float
    f1: float
    rationales: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    vote_share: float | None = None
    scores: list[float | None] | None = None
    components: dict[str, list[float | None]] | None = None
    chosen: int | None = None
    answer_em: list[float] | None = None

    def to_dict(self) -> dict:
        # The selection fields only where a method set them: other methods' files stay as they were.
        extra = ("scores", "components", "chosen", "answer_em")
        return {k: v for k, v in asdict(self).items() if k not in extra or v is not None}


def answer_standard(
    examples: list[Example], large_lm: LargeLM, prompts: PromptTemplates, max_new_tokens: int = 32
) -> list[Prediction]:
    params = GenerationParams(max_new_tokens=max_new_tokens)
    replies = large_lm.generate([prompts.standard_prompt(e) for e in examples], params)
    return [
        _score(e, [], [read_answer(e.answer_type, r[0].text)]) for e, r in zip(examples, replies)
    ]


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
        answers = [read_answer(example.answer_type, next(replies)[0].text) for _ in rs]
        out.append(_score(example, rs, answers))
    return out


def student_answers(
    examples: list[Example], outputs: list[list[str]], objective: Objective
) -> list[Prediction]:
    """Predictions of a student that answers alone, from its outputs (one or k per example), read
    by its objective (`Objective.answer_of`). Several outputs per example are majority-voted."""
    out = []
    for example, texts in zip(examples, outputs):
        rationales, answers = [], []
        for text in texts:
            rationale, answer = objective.answer_of(text, example.answer_type)
            if rationale is not None:
                rationales.append(rationale)
            answers.append(answer)
        out.append(_score(example, rationales, answers))
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
    em, f1 = score_answer(example.answer_type, prediction, example.gold_answers)
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
