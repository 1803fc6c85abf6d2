"""Text handling shared by the `auto` aspects (`lmgcot.rewards.aspects`) and the gate (`wellformed`).

* A rationale is split into sentences after ".", "!" or "?" followed by white space, and at line
  breaks. This is deliberately simple: an initialism such as "D.C. is" splits in two.
* Content words are the lower-cased runs of letters and digits (so punctuation is stripped) that are
  not in `STOP_WORDS`, a small list of function words plus the connectives rationales use to frame
  reasoning ("answer", "therefore", ...), which say nothing about the facts.
* Sentence-level measures only look at sentences that have at least one content word
  (`content_sentences`): a bare "So." is punctuation of the argument, not a step of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

# A run of this many identical characters (not digits or spaces) is degenerate; "!!!!" and "soooo"
# are, "1000" and "committee" are not.
CHAR_RUN_LENGTH = 4

STOP_WORDS = frozenset(
    """
    a an the and or but nor so of to in on at by for from with as into onto about than then
    is are was were be been being am do does did has have had having it its this that these those
    he she they we you i him her them us me his hers their our your my who whom whose which what
    when where why how there here not no yes also too very just only
    s answer answers therefore thus hence step steps think let lets
    """.split()
)

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
# Letters and digits of any script; "_" is a word character for `\w` but not a letter.
TOKEN_RE = re.compile(r"[^\W_]+")
# A word for readability and bigrams: letters with an optional apostrophe part, or a number.
WORD_RE = re.compile(r"[A-Za-z]+(?:['\u2019][A-Za-z]+)*|\d+")
_VOWEL_GROUP = re.compile(r"[aeiouy]+")
CHAR_RUN_RE = re.compile(rf"([^\d\s])\1{{{CHAR_RUN_LENGTH - 1},}}")
FINAL_PUNCT_RE = re.compile(r"[.!?][\"'\u201d\u2019)\]]*$")


def sentences(text: str) -> list[str]:
    """Non-empty sentences: split after ".", "!" or "?" followed by white space, and at newlines."""
    return [s.strip() for s in _SENTENCE_SPLIT.split(text.strip()) if s.strip()]


def content_words(text: str) -> list[str]:
    """Lower-cased letter/digit runs of `text` that are not stop words, in order, with repeats."""
    return [w for w in TOKEN_RE.findall(text.lower()) if w not in STOP_WORDS]


def count_syllables(word: str) -> int:
    """Vowel groups (a, e, i, o, u, y), less a silent final "e" ("made", not "table"); at least 1.

    A number counts one syllable per digit.
    """
    word = word.lower()
    if word.isdigit():
        return len(word)
    word = re.sub(r"[^a-z]", "", word)
    count = len(_VOWEL_GROUP.findall(word))
    if count > 1 and word.endswith("e") and not word.endswith(("le", "ee")):
        count -= 1
    return max(1, count)


def content_sentences(text: str) -> list[set[str]]:
    """Content-word sets of the sentences that have any."""
    steps = [set(content_words(s)) for s in sentences(text)]
    return [s for s in steps if s]


def score_steps(rationale: str, score: Callable[[list[set[str]]], float]) -> float:
    """0.0 for no content sentence, 1.0 for one (nothing to link), else `score` of the sentences."""
    steps = content_sentences(rationale)
    if not steps:
        return 0.0
    if len(steps) == 1:
        return 1.0
    return score(steps)


def share_linked_to_earlier(steps: list[set[str]]) -> float:
    """Share of the steps after the first that share a word with an earlier step (logicality)."""
    seen = set(steps[0])
    linked = 0
    for step in steps[1:]:
        linked += bool(step & seen)
        seen |= step
    return linked / (len(steps) - 1)


def mean_adjacent_jaccard(steps: list[set[str]]) -> float:
    """Mean Jaccard overlap of adjacent steps (coherence)."""
    pairs = list(zip(steps, steps[1:]))
    return sum(len(a & b) / len(a | b) for a, b in pairs) / len(pairs)


def check_lengths(first: Sequence, second: Sequence, name: str = "rationales") -> None:
    if len(first) != len(second):
        raise ValueError(f"{len(second)} {name} for {len(first)} items: need one each")


def require(extra: dict, key: str, what: str) -> list:
    """`extra[key]` as a list; a missing or None entry raises ValueError naming `what`."""
    if extra.get(key) is None:
        raise ValueError(f"missing input extra[{key!r}]: {what}")
    return list(extra[key])
