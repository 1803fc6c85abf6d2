"""Turning large-LM replies and rationales into short answers, and voting over sampled answers."""

from __future__ import annotations

import re
from collections.abc import Sequence

from lmgcot.answers.metrics import normalize_answer

# "the answer is X", "So the answer is: X", "Answer: X", "**Answer**: X", "final answer is X".
# `is` must be a whole word so that "answers" or "answerish" never count as a phrase.
ANSWER_PHRASE = re.compile(r"\banswer(?:\*\*)?\s*(?:\bis\b\s*:?|:)", re.IGNORECASE)
# Where the sentence that holds an answer phrase starts: after the last sentence end or newline.
# A sentence end is ".", "!" or "?" followed by space and a character that is not lower case, and
# not the last period of an initialism, so "Washington, D.C. in 1990" stays one sentence.
_SENTENCE_END = re.compile(r"(?<!\.[A-Za-z])[.!?](?=\s+[^\sa-z])|\n")
# Initialisms such as "D.C." or "U.S." keep their final period.
_INITIALISM = re.compile(r"(?:\b[A-Za-z]\.){2,}$")
_QUOTE_PAIRS = (('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("\u2018", "\u2019"), ("`", "`"))


def _balanced_wrapper(s: str) -> bool:
    """True when the first "(" closes at the last character, as in "(B)" but not "(a) or (b)"."""
    depth = 0
    for i, ch in enumerate(s):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return False
    return depth == 0


def _clean(s: str) -> str:
    """Strip decoration around an answer until nothing changes; the inner text is left as is."""
    while True:
        before = s
        s = s.strip()
        s = re.sub(r"^\*+|\*+$", "", s).strip()
        if s.endswith(".") and not _INITIALISM.search(s):
            s = s.rstrip(".").rstrip()
        for left, right in _QUOTE_PAIRS:
            if len(s) >= 2 and s.startswith(left) and s.endswith(right):
                s = s[len(left) : -len(right)]
        if len(s) >= 2 and s[0] == "(" and s[-1] == ")" and _balanced_wrapper(s):
            s = s[1:-1]
        if s == before:
            return s


def _first_line(s: str) -> str:
    for line in s.splitlines():
        if line.strip():
            return line
    return ""


def _find_answer(text: str) -> tuple[int, str] | None:
    """(start of the answer phrase, cleaned answer) for the last phrase that is followed by text."""
    for m in reversed(list(ANSWER_PHRASE.finditer(text))):
        # The answer may sit on the line after the phrase ("The answer is:\nParis").
        answer = _clean(_first_line(text[m.end() :]))
        if answer:
            return m.start(), answer
    return None


def extract_answer(reply: str) -> str:
    """The short answer in a large-LM reply or at the end of a rationale.

    Rules, in order:

    1. An empty or whitespace-only reply gives "".
    2. Answer phrases are found case-insensitively: "the answer is X", "Therefore, the answer is
       X.", "So the answer is: X", "Answer: X", "**Answer:** X", "**Answer**: X". The LAST phrase
       that is followed by any text wins; the answer is the rest of that line, or the next
       non-empty line when the phrase ends its line.
    3. With no usable phrase, the answer is the first non-empty line of the reply.
    4. The answer is then cleaned, repeatedly until stable: surrounding whitespace, bold/italic
       asterisks at either end, trailing periods (except after an initialism such as "D.C."),
       one pair of matching surrounding quotes (straight, curly or backticks) and one pair of
       parentheses that wrap the whole answer ("(B)", not "(a) or (b)").

    Casing and inner punctuation are kept; `normalize_answer` handles those when scoring.
    """
    if not reply or not reply.strip():
        return ""
    found = _find_answer(reply)
    if found is not None:
        return found[1]
    return _clean(_first_line(reply))


def split_rationale_answer(text: str) -> tuple[str, str]:
    """Split a chain-of-thought completion into (rationale, answer).

    The rationale is everything before the sentence that holds the last answer phrase (see
    `extract_answer`); that sentence, and anything after it, is dropped. The sentence starts after
    the last newline, or the last ".", "!" or "?" that is followed by space and a character that
    is not lower case (initialisms like "D.C." excepted), before the phrase. The answer is extracted
    from that phrase. Without an answer phrase the result is (text.strip(), "").

    >>> split_rationale_answer("A is B. B was born in C. So the answer is C.")
    ('A is B. B was born in C.', 'C')
    """
    found = _find_answer(text)
    if found is None:
        return text.strip(), ""
    phrase_start, answer = found
    sentence_start = 0
    for m in _SENTENCE_END.finditer(text, 0, phrase_start):
        sentence_start = m.end()
    return text[:sentence_start].strip(), answer


def majority_vote(answers: Sequence[str]) -> tuple[str, float]:
    """Self-consistency vote: (representative answer, vote share) over normalised answers.

    Answers vote for their `normalize_answer` class. The winner is the class with most votes;
    a tie goes to the class whose first member comes earliest. The representative is that first
    member as originally written, and the share is its vote count over ALL answers, so samples
    that produced no answer lower the confidence. Answers that normalise to "" do not vote; if
    every answer is empty, or there are none, the result is ("", 0.0).
    """
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, answer in enumerate(answers):
        key = normalize_answer(answer)
        if not key:
            continue
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
    if not counts:
        return "", 0.0
    winner = min(counts, key=lambda k: (-counts[k], first[k]))
    return answers[first[winner]], counts[winner] / len(answers)
