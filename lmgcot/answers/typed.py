"""Answers by type, for the reasoning tasks Fine-tune-CoT studies: reading one out of a reply, and
deciding whether it matches the gold answer.

Types and their tasks:
  number   GSM8K                      "... so she has 1,250 dollars. The answer is $1,250."  -> "1250"
  yes_no   StrategyQA, coin flip      "... Therefore, the answer is Yes."                     -> "yes"
  choice   CommonsenseQA (A-E)        "... the answer is (C) bank."                           -> "C"
  string   last-letter concatenation, "... the answer is \"ky\"."                           -> "ky"
           and the QA datasets

Every extractor looks first at what follows the last answer phrase ("the answer is", "Answer:",
`lmgcot.answers.extract`), then, when that holds nothing of its type, at the whole reply, and returns
None when the reply holds no answer of its type at all: a reply without an answer counts as wrong,
never as a guess.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from lmgcot.answers.extract import ANSWER_PHRASE, extract_answer
from lmgcot.answers.metrics import best_over_golds, normalize_answer

ANSWER_TYPES = ("number", "yes_no", "choice", "string")

# A number as people write it: sign, thousands separators, decimals ("-1,234.5", "$12", "3.").
_NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])-?\d+(?:\.\d+)?")
_YES_NO = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)
# A choice letter standing alone: "(C)", "C)", "C.", "C:" or a bare "C" followed by a non-letter.
_CHOICE = re.compile(r"(?<![A-Za-z])\(?([A-E])\)?(?![A-Za-z])")


def _pick(reply: str, find, find_anywhere=None):
    """The first hit of `find` after the last answer phrase; without a phrase, or with nothing there,
    the last hit of `find_anywhere` (default `find`) in the whole reply; else None."""
    phrases = list(ANSWER_PHRASE.finditer(reply))
    if phrases:
        hits = find(reply[phrases[-1].end() :])
        if hits:
            return hits[0]
    hits = (find_anywhere or find)(reply)
    return hits[-1] if hits else None


def extract_number(reply: str) -> str | None:
    """The answer as a canonical number string ("1250", "-3", "2.5")."""
    found = _pick(reply, _NUMBER.findall)
    return canonical_number(found) if found is not None else None


def canonical_number(text: str) -> str:
    """ "1,250" -> "1250", "2.50" -> "2.5", "3.0" -> "3"."""
    value = float(text.replace(",", "").replace("$", ""))
    if value.is_integer():
        return str(int(value))
    return repr(value)


def extract_yes_no(reply: str) -> str | None:
    """ "yes" or "no" ("true" / "false" map to them)."""
    found = _pick(reply, _YES_NO.findall)
    if found is None:
        return None
    word = found.lower()
    return {"true": "yes", "false": "no"}.get(word, word)


def extract_choice(reply: str, letters: str = "ABCDE") -> str | None:
    """A choice letter. After an answer phrase any standalone capital of `letters` counts; elsewhere
    only a marked one ("(C)", "C)", "C." at the end, "C:"), since a bare "A" is usually the article."""

    def standalone(text: str) -> list[str]:
        return [m.group(1) for m in _CHOICE.finditer(text) if m.group(1) in letters]

    def marked(text: str) -> list[str]:
        return [
            m.group(1) for m in _CHOICE.finditer(text) if m.group(1) in letters and _marked(text, m)
        ]

    return _pick(reply, standalone, marked)


def _marked(text: str, m: re.Match) -> bool:
    """A letter written as a choice: in parentheses, or followed by ")", ":", "," or a final "."."""
    s = m.group(0)
    if s.startswith("(") or s.endswith(")"):
        return True
    after = text[m.end() : m.end() + 2]
    return after[:1] in ("", ":", ",", "\n") or after in (".", ".\n")


def extract_string(reply: str) -> str | None:
    """A free-text answer (`extract_answer`, normalised); None when the reply has none."""
    answer = normalize_answer(extract_answer(reply))
    return answer or None


def extract_typed(kind: str, reply: str) -> str | None:
    if kind == "number":
        return extract_number(reply)
    if kind == "yes_no":
        return extract_yes_no(reply)
    if kind == "choice":
        return extract_choice(reply)
    if kind == "string":
        return extract_string(reply)
    raise ValueError(f"answer type {kind!r}: expected one of {ANSWER_TYPES}")


def answers_match(kind: str, predicted: str | None, gold: str) -> bool:
    """Whether a predicted answer (from `extract_typed`) equals the gold one, compared by type:
    numbers by value, yes/no and choice letters case-insensitively, strings after normalisation."""
    if predicted is None:
        return False
    if kind == "number":
        try:
            return math.isclose(float(predicted), float(canonical_number(gold)), abs_tol=1e-6)
        except ValueError:
            return False
    if kind == "yes_no":
        gold = {"true": "yes", "false": "no"}.get(gold.strip().lower(), gold.strip().lower())
        return predicted.lower() == gold
    if kind == "choice":
        return predicted.strip().upper() == gold.strip().strip("()").upper()
    if kind == "string":
        return normalize_answer(predicted) == normalize_answer(gold)
    raise ValueError(f"answer type {kind!r}: expected one of {ANSWER_TYPES}")


def read_answer(kind: str, reply: str) -> str:
    """The answer a reply gives, read by answer type: `extract_answer` as written for `string` (the
    QA datasets' EM/F1 normalise it later), the typed extractor otherwise; "" when there is none."""
    if kind == "string":
        return extract_answer(reply)
    return extract_typed(kind, reply) or ""


def score_answer(kind: str, prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(EM, F1) of a prediction against the gold answers. `string`: HotpotQA EM and token F1, each
    maximised over the golds; other types: 1.0 or 0.0 on both, by `answers_match`."""
    if kind == "string":
        return best_over_golds(prediction, golds)
    hit = float(any(answers_match(kind, prediction or None, g) for g in golds))
    return hit, hit
