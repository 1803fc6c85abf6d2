"""How the `simulated` large LM reads a reasoning-task rationale it is given (the answer step of
`lmgcot.llm.simulated_reasoning`): the steps it states, in any of the datasets' phrasings.

last_letter: the letter stated for each word, and a stated final concatenation. coin_flip: the
start, each person's stated move or resulting state, and a stated or trailing final state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_LETTER = r'(?:"(?P<q>[A-Za-z])"|(?P<b>[A-Za-z])(?=[.,;]|\s*$))'
_JOINED = re.compile(r"concatenat|together|join|combin|spell", re.IGNORECASE)
_STATED_ANSWER = re.compile(r'\banswer is\s*:?\s*"?(?P<a>[A-Za-z]+)"?', re.IGNORECASE)
_LIST = re.compile(r"\blast letters\s*(?:are|:)\s*(?P<rest>.*)$", re.IGNORECASE)


def _word_rx(word: str) -> re.Pattern:
    return re.compile(
        rf'(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])"?\s*'
        rf"(?:'s last letter is|ends with|ends in|is|gives|->|:)\s*(?:the letter\s+)?{_LETTER}"
    )


def stated_letters(rationale: str, words: list[str]) -> list[str | None]:
    """The last letter the rationale states for each word, None where it states none."""
    out: list[str | None] = []
    for w in words:
        m = _word_rx(w).search(rationale)
        out.append((m.group("q") or m.group("b")).lower() if m else None)
    # A list ("Their last letters are "a", "n" and "u".") fills words in question order.
    for sentence in _SENTENCE.split(rationale):
        m = _LIST.search(sentence)
        if not m:
            continue
        items = [x.strip().strip("\"'.").strip() for x in re.split(r",|\band\b", m.group("rest"))]
        if all(len(x) == 1 and x.isalpha() for x in items):
            for i, c in enumerate(items[: len(words)]):
                if out[i] is None:
                    out[i] = c.lower()
    return out


def stated_concatenation(rationale: str) -> str | None:
    """The final string the rationale states: after "the answer is", or quoted in a sentence that
    joins letters ("Concatenating them gives "ab"")."""
    answers = list(_STATED_ANSWER.finditer(rationale))
    if answers:
        return answers[-1].group("a").lower()
    for sentence in reversed(_SENTENCE.split(rationale)):
        if _JOINED.search(sentence):
            quoted = re.findall(r'"([A-Za-z]+)"', sentence)
            if quoted:
                return quoted[-1].lower()
    return None


@dataclass
class CoinReading:
    """What a coin rationale states: the start, per person the state after them (True = heads) and
    whether they flip, and a final answer (stated, or the state after the last mention)."""

    start: bool
    states: list[bool | None]
    actions: list[bool | None]
    final: str | None


_STATE = re.compile(r"\b(heads|tails)\b", re.IGNORECASE)
_NEGATION = re.compile(r"\bnot\b|n't\b|\bleaves?\b|\bleft\b|\bnever\b|\bno\b", re.IGNORECASE)
_YES_NO_ANSWER = re.compile(r"\banswer is\s*:?\s*\"?(?P<a>yes|no)\b", re.IGNORECASE)


def read_coin_rationale(rationale: str, people: list[str]) -> CoinReading:
    """Sentence by sentence: a sentence naming people states the move of each (a negation means no
    flip) or, when it names a side, the state after the latest of them; a side named with no person
    is the start (before anyone) or a final state (after everyone mentioned so far)."""
    rx = [re.compile(rf"(?<![A-Za-z]){re.escape(p)}(?![A-Za-z])") for p in people]
    reading = CoinReading(True, [None] * len(people), [None] * len(people), None)
    stated_answer, trailing, seen_person = None, None, False
    for sentence in _SENTENCE.split(rationale.strip()):
        m = _YES_NO_ANSWER.search(sentence)
        if m:
            stated_answer = m.group("a").lower()
            continue
        named = [i for i, r in enumerate(rx) if r.search(sentence)]
        sides = _STATE.findall(sentence)
        if named:
            seen_person, trailing = True, None
            if sides:
                reading.states[max(named)] = sides[-1].lower() == "heads"
            else:
                for i in named:
                    reading.actions[i] = not _NEGATION.search(sentence)
        elif sides:
            heads = sides[-1].lower() == "heads"
            if seen_person:
                trailing = "yes" if heads else "no"
            else:
                reading.start = heads
    reading.final = stated_answer or trailing
    return reading
