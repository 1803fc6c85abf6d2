"""Teacher stage: the large LM writes chain-of-thought rationales for the training questions.

The result is a stored artifact (one JSONL row per rationale sample) that later stages and later runs
reuse; the calls themselves also go through the persistent call cache, so regenerating it is free.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass

from lmgcot.answers.extract import split_rationale_answer
from lmgcot.answers.typed import read_answer, score_answer
from lmgcot.data.example import Example
from lmgcot.llm.base import GenerationParams, LargeLM
from lmgcot.prompts import PromptTemplates


@dataclass(frozen=True)
class TeacherRationale:
    """One sampled rationale for one question; `answer` is what it concludes (for zero-shot-CoT:
    the answer step's reply), `correct` its EM."""

    id: str
    sample: int
    rationale: str
    answer: str
    correct: bool
    completion: str

    def to_dict(self) -> dict:
        return asdict(self)


PROMPTINGS = ("cot", "zero_shot_cot", "few_shot_cot")


def sample_rationales(
    examples: list[Example],
    large_lm: LargeLM,
    prompts: PromptTemplates,
    num_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    strip_answer: bool = True,
    prompting: str = "cot",
    exemplars: list[Example] | None = None,
    answer_max_new_tokens: int = 32,
) -> list[TeacherRationale]:
    """D=`num_samples` CoT rationales per example, each a distinct cached call.

    prompting:
      cot            one call; the answer is read from the rationale's own conclusion
                     ("So the answer is X"), as LM-Guided CoT's teacher does.
      zero_shot_cot  Fine-tune-CoT's two steps: "Q: ...\nA: Let's think step by step." for the
                     rationale, then that prompt, the rationale and "Therefore, the answer is" for
                     the answer (one greedy call per sample).
      few_shot_cot   `exemplars` (question, gold rationale, answer) before the question's CoT
                     prompt; the answer is read from the completion, which is cut where the model
                     starts a new question.
    """
    if num_samples < 1:
        raise ValueError(f"teacher.num_samples={num_samples}: must be >= 1")
    if prompting not in PROMPTINGS:
        raise ValueError(f"teacher.prompting={prompting!r}: allowed values are {PROMPTINGS}")
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    if prompting == "few_shot_cot":
        shots = list(exemplars or [])
        texts = [prompts.few_shot_prompt(e, shots) for e in examples]
    else:
        texts = [prompts.cot_prompt(e) for e in examples]
    completions = [
        [_own_block(c.text) if prompting == "few_shot_cot" else c.text for c in samples]
        for samples in large_lm.generate(texts, params, n=num_samples)
    ]
    if prompting == "zero_shot_cot":
        steps = [
            prompts.answer_step_prompt(e, text)
            for e, samples in zip(examples, completions)
            for text in samples
        ]
        replies = iter(large_lm.generate(steps, GenerationParams(answer_max_new_tokens)))
        answer_texts = [[next(replies)[0].text for _ in samples] for samples in completions]
    else:
        answer_texts = completions
    return _scored_rationales(examples, completions, answer_texts, strip_answer)


def _scored_rationales(
    examples: list[Example],
    completions: list[list[str]],
    answer_texts: list[list[str]],
    strip_answer: bool,
) -> list[TeacherRationale]:
    """Each example's sampled completions, their answers read from `answer_texts` and scored."""
    out = []
    for example, samples, answers in zip(examples, completions, answer_texts):
        for i, (text, answer_text) in enumerate(zip(samples, answers)):
            answer = read_answer(example.answer_type, answer_text)
            em, _ = score_answer(example.answer_type, answer, example.gold_answers)
            out.append(
                TeacherRationale(
                    id=example.id,
                    sample=i,
                    rationale=split_rationale_answer(text)[0] if strip_answer else text.strip(),
                    answer=answer,
                    correct=em == 1.0,
                    completion=text,
                )
            )
    return out


def few_shot_exemplars(examples: list[Example], k: int, seed: int) -> list[Example]:
    """`k` training examples with a gold rationale, drawn with `seed`, for few-shot CoT."""
    pool = [e for e in examples if e.rationale]
    random.Random(seed).shuffle(pool)
    return pool[:k]


def _own_block(text: str) -> str:
    """A few-shot completion up to where the model goes on to write a next "Q:" block."""
    return re.split(r"\n\s*Q:", text, maxsplit=1)[0]


def teacher_stats(rationales: list[TeacherRationale], filter_correct: bool = True) -> dict:
    """Counts for results.json: rationales and questions, the share correct, and how many
    rationales (and questions with at least one) the filter kept: diverse reasoning's yield."""
    n = len(rationales)
    kept = kept_rationales(rationales, filter_correct)
    questions = len({r.id for r in rationales})
    covered = len({r.id for r in kept})
    return {
        "rationales": n,
        "questions": questions,
        "correct_share": sum(r.correct for r in rationales) / n if n else 0.0,
        "kept": len(kept),
        "kept_share": len(kept) / n if n else 0.0,
        "questions_kept": covered,
        "questions_kept_share": covered / questions if questions else 0.0,
    }


def kept_rationales(
    rationales: list[TeacherRationale], filter_correct: bool
) -> list[TeacherRationale]:
    """The rationales a student is trained on: non-empty, and correct under `filter_correct`."""
    return [r for r in rationales if r.rationale.strip() and (r.correct or not filter_correct)]
