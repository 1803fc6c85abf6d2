"""What the student learns to write (`distill.objective`), and reading its outputs back.

rationale         LM-Guided CoT: the rationale only; the large LM answers from it.
rationale_answer  Fine-tune-CoT: "rationale --> answer"; the student answers alone.
multitask         distilling step-by-step: "predict: <input>" -> answer and "explain: <input>" ->
                  rationale, loss = alpha * predict + (1 - alpha) * explain.
answer            vanilla fine-tuning: the answer only, no rationale (the baseline Fine-tune-CoT
                  beats); needs no teacher.
"""

from __future__ import annotations

from lmgcot.answers.typed import read_answer

OBJECTIVES = ("rationale", "rationale_answer", "multitask", "answer")
# Objectives whose student writes rationales for the large LM (the lm_guided methods, refine).
WRITES_RATIONALES = ("rationale", "rationale_answer", "multitask")
# Objectives whose student answers on its own (the finetune_cot methods).
ANSWERS_ALONE = ("rationale_answer", "multitask", "answer")
SEPARATOR = "-->"
PREDICT, EXPLAIN = "predict", "explain"


def rationale_answer_target(rationale: str, answer: str) -> str:
    return f"{rationale.strip()} {SEPARATOR} {answer.strip()}"


def parse_rationale_answer(text: str, answer_type: str = "string") -> tuple[str, str]:
    """Split a `rationale --> answer` output into (rationale, answer).

    With a separator, the rationale is what precedes the first "-->" and the answer is read (by
    `answer_type`, `lmgcot.eval.typed_answers.read_answer`) from what follows the last one; when
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
    if objective == "rationale_answer":
        return parse_rationale_answer(output)[0]
    return output.strip()


def explain_task(objective: str) -> str | None:
    """The input prefix under which the student writes rationales (multitask: "explain")."""
    return EXPLAIN if objective == "multitask" else None


def answer_task(objective: str) -> str | None:
    """The input prefix under which the student answers (multitask: "predict")."""
    return PREDICT if objective == "multitask" else None
