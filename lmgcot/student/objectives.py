"""What the student learns to write (`distill.objective`), and reading its outputs back.

rationale         LM-Guided CoT: the rationale only; the large LM answers from it.
rationale_answer  Fine-tune-CoT: "rationale --> answer"; the student answers alone.
multitask         distilling step-by-step: "predict: <input>" -> answer and "explain: <input>" ->
                  rationale, loss = alpha * predict + (1 - alpha) * explain.
answer            vanilla fine-tuning: the answer only, no rationale (the baseline Fine-tune-CoT
                  beats); needs no teacher.

Each is an `Objective` record in `OBJECTIVES`; adding one is one entry and its pair function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from lmgcot.answers.typed import read_answer
from lmgcot.data.example import Example
from lmgcot.prompts import PromptTemplates

SEPARATOR = "-->"
PREDICT, EXPLAIN = "predict", "explain"
# The task name of a single-task objective's pairs.
TARGET = "target"


class Rationale(Protocol):
    """What training pairs need of a kept teacher rationale."""

    id: str
    rationale: str
    answer: str


@dataclass(frozen=True)
class TrainingPairs:
    """(input, target) pairs per task, aligned across tasks (pair i of every task is one example).
    A single-task objective has the one task `TARGET`."""

    tasks: dict[str, list[tuple[str, str]]]

    @property
    def count(self) -> int:
        """Training examples (a multitask example counts once)."""
        return len(next(iter(self.tasks.values()), []))

    @property
    def multitask(self) -> bool:
        return len(self.tasks) > 1

    def texts(self) -> list[str]:
        """Every input and target, e.g. to learn a from-scratch tokenizer's vocabulary."""
        return [text for pairs in self.tasks.values() for pair in pairs for text in pair]


PairsFn = Callable[[list[Example], Sequence[Rationale], PromptTemplates], dict]


@dataclass(frozen=True)
class Objective:
    """One `distill.objective`: what its student is trained on and how its outputs are read."""

    name: str
    # Writes rationales for the large LM (the lm_guided methods, refine).
    writes_rationales: bool
    # Answers on its own (the student-alone methods).
    answers_alone: bool
    pairs_fn: PairsFn
    # Input prefixes under which it writes rationales / answers (multitask only).
    explain_task: str | None = None
    answer_task: str | None = None
    # Its outputs are "rationale --> answer" (split them to read either part).
    appends_answer: bool = False

    @property
    def needs_teacher(self) -> bool:
        return self.writes_rationales

    @property
    def refinable(self) -> bool:
        """Whether RL can refine it: its rationale outputs are rationales alone (a
        rationale_answer student appends its answer, which the rationale rewards would score)."""
        return self.writes_rationales and not self.appends_answer

    def pairs(
        self, examples: list[Example], kept: Sequence[Rationale], prompts: PromptTemplates
    ) -> TrainingPairs:
        return TrainingPairs(self.pairs_fn(examples, kept, prompts))

    def rationale_of(self, output: str) -> str:
        """The rationale part of an output (a rationale_answer student appends its answer)."""
        return parse_rationale_answer(output)[0] if self.appends_answer else output.strip()

    def answer_of(self, output: str, answer_type: str) -> tuple[str | None, str]:
        """(rationale, answer) of an output written under `answer_task`; the rationale is None
        where the objective's answers carry none."""
        if self.appends_answer:
            return parse_rationale_answer(output, answer_type)
        return None, read_answer(answer_type, output)

    def task_weights(self, alpha: float) -> dict[str, float] | None:
        return {PREDICT: alpha, EXPLAIN: 1.0 - alpha} if self.answer_task else None


def _by_id(examples: Iterable[Example]) -> dict[str, Example]:
    return {e.id: e for e in examples}


def _rationale_pairs(examples, kept, prompts) -> dict:
    by_id = _by_id(examples)
    return {TARGET: [(prompts.student_input(by_id[r.id]), r.rationale) for r in kept]}


def _rationale_answer_pairs(examples, kept, prompts) -> dict:
    by_id = _by_id(examples)
    return {
        TARGET: [
            (prompts.student_input(by_id[r.id]), rationale_answer_target(r.rationale, r.answer))
            for r in kept
        ]
    }


def _multitask_pairs(examples, kept, prompts) -> dict:
    by_id = _by_id(examples)
    return {
        PREDICT: [(prompts.student_input(by_id[r.id], PREDICT), by_id[r.id].answer) for r in kept],
        EXPLAIN: [(prompts.student_input(by_id[r.id], EXPLAIN), r.rationale) for r in kept],
    }


def _answer_pairs(examples, kept, prompts) -> dict:
    return {TARGET: [(prompts.student_input(e), e.answer) for e in examples]}


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("rationale", True, False, _rationale_pairs),
        Objective("rationale_answer", True, True, _rationale_answer_pairs, appends_answer=True),
        Objective(
            "multitask", True, True, _multitask_pairs, explain_task=EXPLAIN, answer_task=PREDICT
        ),
        Objective("answer", False, True, _answer_pairs),
    )
}


def rationale_answer_target(rationale: str, answer: str) -> str:
    return f"{rationale.strip()} {SEPARATOR} {answer.strip()}"


def parse_rationale_answer(text: str, answer_type: str = "string") -> tuple[str, str]:
    """Split a `rationale --> answer` output into (rationale, answer).

    With a separator, the rationale is what precedes the first "-->" and the answer is read (by
    `answer_type`, `lmgcot.answers.typed.read_answer`) from what follows the last one; when
    that part holds no answer of its type, or there is no separator (a truncated output), the
    answer falls back to the last candidate in the whole text: the typed extractors' last hit, or
    for `string` answers the answer phrase or first line (`extract_answer`). No answer gives "".
    """
    if SEPARATOR not in text:
        return text.strip(), read_answer(answer_type, text)
    rationale = text.split(SEPARATOR, 1)[0].strip()
    tail = text.rsplit(SEPARATOR, 1)[1]
    answer = read_answer(answer_type, tail)
    if not answer:
        answer = read_answer(answer_type, text)
    return rationale, answer


def rationale_of(objective: str, output: str) -> str:
    """The rationale part of a student output (a rationale_answer student appends its answer)."""
    return OBJECTIVES[objective].rationale_of(output)


def explain_task(objective: str) -> str | None:
    """The input prefix under which the student writes rationales (multitask: "explain")."""
    return OBJECTIVES[objective].explain_task


def answer_task(objective: str) -> str | None:
    """The input prefix under which the student answers (multitask: "predict")."""
    return OBJECTIVES[objective].answer_task
