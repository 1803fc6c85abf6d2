"""Teacher stage: the large LM writes chain-of-thought rationales for the training questions.

The result is a stored artifact (one JSONL row per rationale sample) that later stages and later runs
reuse; the calls themselves also go through the persistent call cache, so regenerating it is free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lmgcot.data.example import Example
from lmgcot.eval.answers import split_rationale_answer
from lmgcot.eval.metrics import best_over_golds
from lmgcot.llm.base import GenerationParams, LargeLM
from lmgcot.prompts import PromptTemplates


@dataclass(frozen=True)
class TeacherRationale:
    """One sampled rationale for one question; `answer` is what it concludes, `correct` its EM."""

    id: str
    sample: int
    rationale: str
    answer: str
    correct: bool
    completion: str

    def to_dict(self) -> dict:
        return asdict(self)


def generate_rationales(
    examples: list[Example],
    large_lm: LargeLM,
    prompts: PromptTemplates,
    num_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    strip_answer: bool = True,
) -> list[TeacherRationale]:
    """D=`num_samples` CoT rationales per example, each a distinct cached call."""
    if num_samples < 1:
        raise ValueError(f"teacher.num_samples={num_samples}: must be >= 1")
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    completions = large_lm.generate(
        [prompts.cot_prompt(e) for e in examples], params, n=num_samples
    )
    out = []
    for example, samples in zip(examples, completions):
        for i, c in enumerate(samples):
            rationale, answer = split_rationale_answer(c.text)
            em, _ = best_over_golds(answer, example.gold_answers)
            out.append(
                TeacherRationale(
                    id=example.id,
                    sample=i,
                    rationale=rationale if strip_answer else c.text.strip(),
                    answer=answer,
                    correct=em == 1.0,
                    completion=c.text,
                )
            )
    return out


def training_pairs(
    examples: list[Example],
    rationales: list[TeacherRationale],
    prompts: PromptTemplates,
    filter_correct: bool = True,
) -> list[tuple[str, str]]:
    """(student input, target rationale) pairs; with `filter_correct`, wrong-answer rationales and
    empty ones are dropped."""
    by_id = {e.id: e for e in examples}
    pairs = []
    for r in rationales:
        if not r.rationale.strip() or (filter_correct and not r.correct):
            continue
        pairs.append((prompts.student_input(by_id[r.id]), r.rationale))
    return pairs


def teacher_stats(rationales: list[TeacherRationale], kept: int) -> dict:
    n = len(rationales)
    return {
        "rationales": n,
        "questions": len({r.id for r in rationales}),
        "correct_share": sum(r.correct for r in rationales) / n if n else 0.0,
        "kept": kept,
        "kept_share": kept / n if n else 0.0,
    }
