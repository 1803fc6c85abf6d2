"""Answer prediction by each method, all with the same frozen large LM, scored with EM/F1.

standard         the large LM answers from context + question
cot              the large LM writes its own rationale, then answers given it
lm_guided_kd     the distilled student writes a rationale (greedy); the large LM answers given it
lm_guided_kd_sc  self-consistency: k sampled student rationales, one large-LM answer each, majority
                 vote over normalised answers (ties go to the answer seen first)
lm_guided_rl(_sc) the same with the RL-refined student
finetune_cot     Fine-tune-CoT: the student answers alone, no large LM: it writes
                 "rationale --> answer" (distill.objective=rationale_answer), or answers under the
                 "predict:" prefix (multitask, distilling step-by-step)
finetune_cot_sc  majority vote over k sampled student outputs
vanilla_ft       the student fine-tuned on answers only (distill.objective=answer) answers alone:
                 the no-rationale baseline

Answers are read and scored by the example's answer type (`lmgcot.eval.typed_answers`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from lmgcot.answers.extract import majority_vote, split_rationale_answer
from lmgcot.answers.metrics import aggregate
from lmgcot.answers.typed import read_answer, score_answer
from lmgcot.data.example import Example
from lmgcot.llm.base import GenerationParams, LargeLM
from lmgcot.prompts import PromptTemplates
from lmgcot.student.objectives import parse_rationale_answer

# The LM-Guided CoT paper's methods (evaluation.methods by default), then the student-alone ones;
# every method, in the order tables list them (the names results.json uses).
PAPER_METHODS = (
    "standard",
    "cot",
    "lm_guided_kd",
    "lm_guided_kd_sc",
    "lm_guided_rl",
    "lm_guided_rl_sc",
)
# Methods that guide the large LM with the refine stage's (RL) student.
RL_METHODS = ("lm_guided_rl", "lm_guided_rl_sc")
# Methods where the distilled student answers on its own, without the large LM.
STUDENT_ALONE = ("finetune_cot", "finetune_cot_sc", "vanilla_ft")
METHODS = (*PAPER_METHODS, *STUDENT_ALONE)


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
    examples: list[Example], outputs: list[list[str]], objective: str
) -> list[Prediction]:
    """Predictions of a student that answers alone, from its outputs (one or k per example):
    `rationale --> answer` outputs are split (`parse_rationale_answer`), answer-only outputs read
    whole. Several outputs per example are majority-voted."""
    out = []
    for example, texts in zip(examples, outputs):
        rationales, answers = [], []
        for text in texts:
            if objective == "rationale_answer":
                rationale, answer = parse_rationale_answer(text, example.answer_type)
                rationales.append(rationale)
            else:
                answer = read_answer(example.answer_type, text)
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
