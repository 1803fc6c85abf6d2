"""The `simulated` large LM on the generated reasoning tasks (`lmgcot.data.reasoning`: last_letter,
coin_flip), so that Fine-tune-CoT's pipeline runs offline on them as it does on the synthetic QA.

`SimulatedLargeLM.respond` hands a prompt here when it is in the reasoning preset's format
(conf/prompt_presets/reasoning.yaml): one or more `Q: ...\\nA: ...` blocks and no `Context:` section.
The task is the LAST block; few-shot CoT prompts put exemplar blocks before it. Roles, by how that
block's `A:` ends:

* **CoT teacher** (`A: Let's think step by step.`): a rationale stating every step (each word's last
  letter, then the concatenation; the coin's state after each person), then "So the answer is X.".
  With probability `error_rate` one step is wrong (a word's second-to-last or first letter instead of
  its last; one person's flip misread) and the final answer follows the wrong step. Wording: greedy
  (temperature 0) always uses the canonical phrasing, the one of the datasets' gold rationales; at
  temperature > 0 each sample draws one of the phrasings of `LAST_LETTER_PHRASINGS` /
  `COIN_PHRASINGS`, so samples differ in wording and, through the error draw, in correctness.
* **Answer step / guided** (`A: Let's think step by step. <rationale>\\nTherefore, the answer is`):
  it trusts the steps the rationale states, in any of the phrasings, even when they are wrong.
  last_letter: the stated letters in word order (`The last letter of "W" is "x"`, `"W" ends with "x"`,
  or a list `last letters are "x", "y", ...` in question order). coin_flip: the last stated state,
  replaying stated flips ("flips" / "does not flip") where no state is stated. Words or people the
  rationale does not cover fall back to its unassisted behaviour for that step; if the steps are
  incomplete but the rationale states a final answer (`the answer is X`, a concatenation such as
  `gives "xy"`, or the coin's state after everyone), it takes that.
* **Unassisted** (`A: The answer is`): correct with probability `unassisted_accuracy`, a draw on the
  question only (so a rationale stating nothing scores exactly like none); otherwise it slips on one
  step: one letter wrong, or one flip misread (the opposite yes/no).

Answers come back like " eb." or " yes.". Draws are hashes as in `lmgcot.llm.simulated`: the
teacher's on (prompt, temperature, sample index), greedy ignoring the index. Questions that follow
neither task's template, or an `A:` that asks for none of the roles, raise `BackendError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from lmgcot.data.reasoning import (
    COIN_END,
    COIN_FLIP,
    COIN_PHRASINGS,
    COIN_START,
    COIN_STAY,
    LAST_LETTER_PHRASINGS,
    LAST_LETTER_QUESTION,
    coin_answer,
    coin_rationale,
    last_letter_rationale,
)
from lmgcot.errors import BackendError
from lmgcot.llm.simulated_reasoning_rationales import (
    read_coin_rationale,
    stated_concatenation,
    stated_letters,
)
from lmgcot.prompts import ANSWER_TRIGGER, COT_TRIGGER, JUDGE_PREFIX


class Simulator(Protocol):
    """What this module uses of `lmgcot.llm.simulated.SimulatedLargeLM`; typed structurally so that
    the two modules do not import each other (that one imports this one)."""

    error_rate: float
    unassisted_accuracy: float

    def _uniform(self, *parts: str) -> float: ...


# The reasoning preset's standard prompt ends with this.
STANDARD_TRIGGER = "The answer is"
TASKS = ("last_letter", "coin_flip")

_BLOCK = re.compile(r"^Q:[ \t]*", re.MULTILINE)
_CONTEXT = re.compile(r"^Context:", re.MULTILINE)


def _template_rx(template: str, **groups: str) -> str:
    rx = re.escape(template)
    for name, pattern in groups.items():
        rx = rx.replace(re.escape("{" + name + "}"), pattern)
    return rx


_LAST_LETTER_Q = re.compile(
    "^" + _template_rx(LAST_LETTER_QUESTION, words=r'(?P<words>[^"]+)') + "$"
)
_MOVE = re.compile(
    r"\s*(?:"
    + _template_rx(COIN_FLIP, name=r"(?P<flip>[^.?]+?)")
    + "|"
    + _template_rx(COIN_STAY, name=r"(?P<stay>[^.?]+?)")
    + ")"
)
_COIN_Q = re.compile(
    "^" + re.escape(COIN_START) + r"(?P<moves>(?:\s*[^.?]+?\.)+?)\s*" + re.escape(COIN_END) + "$"
)


@dataclass(frozen=True)
class ReasoningTask:
    """The last block of a reasoning prompt: the question read into its steps, and the role asked."""

    kind: str  # last_letter | coin_flip
    question: str
    role: str  # teacher | answer | unassisted
    items: tuple[str, ...]  # the words, or the people in order
    flips: tuple[bool, ...] = ()  # coin_flip: who flips
    rationale: str = ""

    @property
    def letters(self) -> list[str]:
        return [w[-1].lower() for w in self.items]


def is_reasoning_prompt(prompt: str) -> bool:
    """A `Q: ... A: ...` prompt without a `Context:` section (the synthetic QA's marker)."""
    if prompt.startswith(JUDGE_PREFIX):
        return False  # the QA reader refuses these with its own message
    return bool(_BLOCK.search(prompt)) and not _CONTEXT.search(prompt)


def read_reasoning_prompt(prompt: str) -> ReasoningTask:
    """The last `Q:`/`A:` block of `prompt`, parsed; `BackendError` when it cannot be read."""
    marks = list(_BLOCK.finditer(prompt))
    if not marks:
        raise BackendError("simulated large LM: the prompt has no 'Q:' line")
    question, sep, answer_part = prompt[marks[-1].end() :].partition("\nA:")
    if not sep:
        raise BackendError("simulated large LM: the prompt's last 'Q:' line has no 'A:' after it")
    question, answer_part = question.strip(), answer_part.strip()
    kind, items, flips = _parse_question(question)
    if answer_part.endswith(COT_TRIGGER):
        role, rationale = "teacher", ""
    elif answer_part.endswith(ANSWER_TRIGGER):
        role = "answer"
        rationale = answer_part[: -len(ANSWER_TRIGGER)].strip()
        if rationale.startswith(COT_TRIGGER):
            rationale = rationale[len(COT_TRIGGER) :].strip()
    elif answer_part.endswith(STANDARD_TRIGGER) or not answer_part:
        role, rationale = "unassisted", ""
    else:
        raise BackendError(
            f"simulated large LM: the last 'A:' ends with {answer_part[-40:]!r}; it expects "
            f"{COT_TRIGGER!r} (rationale), {ANSWER_TRIGGER!r} (answer step) or "
            f"{STANDARD_TRIGGER!r} (standard prompt)"
        )
    return ReasoningTask(kind, question, role, items, flips, rationale)


def _parse_question(question: str) -> tuple[str, tuple[str, ...], tuple[bool, ...]]:
    m = _LAST_LETTER_Q.match(question)
    if m and m.group("words").split():
        return "last_letter", tuple(m.group("words").split()), ()
    m = _COIN_Q.match(question)
    if m:
        moves = m.group("moves")
        people, flips, pos = [], [], 0
        for mv in _MOVE.finditer(moves):
            if mv.start() != pos:
                break
            people.append((mv.group("flip") or mv.group("stay")).strip())
            flips.append(mv.group("flip") is not None)
            pos = mv.end()
        if people and pos == len(moves):
            return "coin_flip", tuple(people), tuple(flips)
    raise BackendError(
        f"simulated large LM: cannot read the question {question[:80]!r}; in 'Q: ... A: ...' "
        f"prompts it only understands the generated reasoning tasks ({', '.join(TASKS)})"
    )


# -- roles -------------------------------------------------------------------------------------


def respond_reasoning(lm: Simulator, prompt: str, salt: str, greedy: bool) -> str:
    task = read_reasoning_prompt(prompt)
    if task.role == "teacher":
        return _write_rationale(lm, task, prompt, salt, greedy)
    if task.role == "answer":
        return f" {_answer_with_rationale(lm, task)}."
    return f" {_unassisted(lm, task)}."


def _write_rationale(
    lm: Simulator, task: ReasoningTask, prompt: str, salt: str, greedy: bool
) -> str:
    corrupt = lm._uniform("teacher", prompt, salt) < lm.error_rate
    step = int(lm._uniform("teacher-step", prompt, salt) * len(task.items))
    slip = lm._uniform("teacher-slip", prompt, salt)
    n_phrasings = len(LAST_LETTER_PHRASINGS if task.kind == "last_letter" else COIN_PHRASINGS)
    # Greedy decoding always words it the canonical way; samples draw a wording each.
    phrasing = 0 if greedy else int(lm._uniform("phrasing", prompt, salt) * n_phrasings)
    if task.kind == "last_letter":
        letters = task.letters
        if corrupt:
            letters[step] = wrong_letter(task.items[step], slip)
        text = last_letter_rationale(list(task.items), letters, phrasing)
        return f"{text} So the answer is {''.join(letters)}."
    flips = list(task.flips)
    if corrupt:
        flips[step] = not flips[step]  # one person's move misread; later states follow it
    return f"{coin_rationale(list(task.items), flips, phrasing)} So the answer is {coin_answer(flips)}."


def _slip(lm: Simulator, task: ReasoningTask) -> int | None:
    """The step it gets wrong on its own, or None: drawn from the question alone, so the same
    question fails the same way with or without a rationale that says nothing."""
    if lm._uniform("reasoning-unassisted", task.question) < lm.unassisted_accuracy:
        return None
    return int(lm._uniform("reasoning-slip", task.question) * len(task.items))


def _own_steps(lm: Simulator, task: ReasoningTask) -> list:
    """Its unassisted reading of every step: letters, or who flips."""
    slip = _slip(lm, task)
    if task.kind == "last_letter":
        letters = task.letters
        if slip is not None:
            u = lm._uniform("reasoning-slip-letter", task.question)
            letters[slip] = wrong_letter(task.items[slip], u)
        return letters
    flips = list(task.flips)
    if slip is not None:
        flips[slip] = not flips[slip]
    return flips


def _unassisted(lm: Simulator, task: ReasoningTask) -> str:
    own = _own_steps(lm, task)
    return "".join(own) if task.kind == "last_letter" else coin_answer(own)


def _answer_with_rationale(lm: Simulator, task: ReasoningTask) -> str:
    if task.kind == "last_letter":
        stated = stated_letters(task.rationale, list(task.items))
        if all(c is not None for c in stated):
            return "".join(stated)  # type: ignore[arg-type]
        final = stated_concatenation(task.rationale)
        if final is not None:
            return final
        own = _own_steps(lm, task)
        return "".join(c if c is not None else o for c, o in zip(stated, own, strict=True))
    reading = read_coin_rationale(task.rationale, list(task.items))
    complete = all(
        s is not None or a is not None for s, a in zip(reading.states, reading.actions, strict=True)
    )
    if not complete and reading.final is not None:
        return reading.final
    own = _own_steps(lm, task)
    heads = reading.start
    for state, action, flip in zip(reading.states, reading.actions, own, strict=True):
        if state is not None:
            heads = state
        else:
            heads = heads != (action if action is not None else flip)
    return "yes" if heads else "no"


def wrong_letter(word: str, u: float) -> str:
    """A plausible wrong last letter for `word`: its second-to-last or first letter (by `u`), or
    another of its letters; never its last."""
    w = word.lower()
    near = [w[-2], w[0]] if len(w) > 1 else []
    if u >= 0.5:
        near.reverse()
    for c in [*near, *w[::-1], *"aeiou"]:
        if c.isalpha() and c != w[-1]:
            return c
    return "x"
