"""The well-formedness gate: whether a rationale is text at all, in [0, 1], to multiply aspects by.

The `auto` aspects measure surface properties that junk can max out: one sentence is perfectly
coherent, "in in in." is perfectly readable. `wellformedness` is the product of three factors that
are 1.0 for ordinary prose and fall to 0 for degenerate output, so that a `RewardScorer` with
`gate=True` can multiply every aspect by it and junk cannot score high on any of them:

* `repetition_factor`: stutters ("in in in", "the cat the cat"), few distinct bigrams, character
  runs ("!!!!", "TheTheThe");
* `known_word_factor`: the share of words that are known, i.e. occur in the example's context or
  question, in the stop words or in a vocabulary of real rationales (so "bral" is not);
* `sentence_factor`: sentences that are fragments (under three words, or ending on "in", "the",
  ...), a missing final ".", "!" or "?", unbalanced brackets or double quotes.

Calibration (tests/test_wellformed.py): the synthetic dataset's teacher rationales score 1.0;
"bral was", "TheTheThe in in in in", "Paris Paris Paris Paris.", "was born in" and "" score 0.
What the gate cannot see: grammar and word order ("born Paris Alice in was." passes), meaning
(a copied context sentence passes), and real words used wrongly. Fluency covers some of that.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from lmgcot.data.example import Example
from lmgcot.rewards.aspects import MISSING_FINAL_PUNCT_FACTOR
from lmgcot.rewards.text import (
    CHAR_RUN_RE,
    FINAL_PUNCT_RE,
    STOP_WORDS,
    TOKEN_RE,
    check_lengths,
    sentences,
)

# The gate's component name: logged and reported beside the aspects, never weighted in a mix.
WELLFORMED = "wellformed"

# Repetition: a word is a stutter when it repeats the word before it or completes a bigram that
# repeats the bigram before it, within one sentence. Real prose almost never stutters, but one
# slip in 20 words (0.05) is tolerated; at a quarter of the words the text is a loop (factor 0),
# linear in between.
STUTTER_OK, STUTTER_BAD = 0.05, 0.25
# Distinct bigrams / all bigrams. Templated two-fact rationales ("X came out in 1970. Y came out in
# 1953.") sit near 0.75 because of the shared phrasing; at 0.6 and above the factor is 1, at 0.3
# (a phrase said three times over) it is 0.
DISTINCT2_BAD, DISTINCT2_OK = 0.3, 0.6
# Share of the non-space characters inside a character run (`text.CHAR_RUN_LENGTH` identical
# characters) or a chunk of two or more letters said three times in a row ("TheTheThe"), both
# within a word. Prose has none; the factor falls linearly to 0 at a quarter of the text.
RUN_BAD = 0.25
# Share of known words (numbers always count as known: arithmetic makes new ones). A rationale
# restates its context, so nearly all its words are known; 10% unknown words (a paraphrase, a
# connective missing from the vocabulary) are tolerated, half or more unknown is gibberish.
KNOWN_BAD, KNOWN_OK = 0.5, 0.9
# A sentence with fewer words than this is a fragment ("bral was.", "So."); the factor is the
# share of sentences that are not fragments.
MIN_SENTENCE_WORDS = 3
# A sentence ending on one of these stops mid-phrase ("... was born in."). Phrasal verbs ("he gave
# in.") are wrongly flagged; they are rare in rationales.
DANGLING_WORDS = frozenset(
    "a an the and or but nor of to in on at by for from with into onto than".split()
)
# The factor for an unbalanced "(", "[" or double quote: a cheap sign of cut-off or garbled text.
UNBALANCED_FACTOR = 0.5


def wellformedness(
    examples: Sequence[Example],
    rationales: Sequence[str],
    vocabulary: Iterable[str] | None = None,
) -> list[float]:
    """Per rationale: repetition * known words * sentences, each factor in [0, 1].

    A word is known when it occurs (lower-cased, as a run of letters and digits) in the example's
    titles, context sentences or question, in `text.STOP_WORDS`, or in `vocabulary` (lower-cased
    words, e.g. `vocabulary_of` the teacher's train rationales, so that the connectives of real
    rationales are known even where the context lacks them). An empty rationale scores 0.0.
    """
    check_lengths(examples, rationales)
    common = STOP_WORDS | frozenset(vocabulary or ())
    out = []
    for example, rationale in zip(examples, rationales):
        if not TOKEN_RE.search(rationale):
            out.append(0.0)
            continue
        known = common | _example_words(example)
        out.append(
            repetition_factor(rationale)
            * known_word_factor(rationale, known)
            * sentence_factor(rationale)
        )
    return out


def vocabulary_of(texts: Iterable[str]) -> frozenset[str]:
    """The lower-cased words of `texts`, tokenised as `wellformedness` reads rationales."""
    return frozenset(w for text in texts for w in TOKEN_RE.findall(text.lower()))


def repetition_factor(text: str) -> float:
    """stutter * distinct bigrams * runs (see STUTTER_*, DISTINCT2_*, RUN_BAD); 1.0 for no words."""
    words = TOKEN_RE.findall(text.lower())
    if not words:
        return 1.0
    # Within sentences: "... by Ann Lee. Ann Lee was born ..." repeats the bridge, not a stutter.
    stutters = sum(_stutters(TOKEN_RE.findall(s.lower())) for s in sentences(text))
    bigrams = list(zip(words, words[1:]))
    distinct2 = len(set(bigrams)) / len(bigrams) if bigrams else 1.0
    pieces = text.split()
    in_runs = sum(_chars_in_runs(p) for p in pieces) / sum(len(p) for p in pieces)
    return (
        _ramp(stutters / len(words), STUTTER_BAD, STUTTER_OK)
        * _ramp(distinct2, DISTINCT2_BAD, DISTINCT2_OK)
        * _ramp(in_runs, RUN_BAD, 0.0)
    )


def known_word_factor(text: str, known: frozenset[str] | set[str]) -> float:
    """Ramp of the share of `text`'s words that are in `known` or numbers; see KNOWN_*.

    1.0 for no words.
    """
    words = TOKEN_RE.findall(text.lower())
    if not words:
        return 1.0
    share = sum(w.isdigit() or w in known for w in words) / len(words)
    return _ramp(share, KNOWN_BAD, KNOWN_OK)


def sentence_factor(text: str) -> float:
    """(share of sentences that are not fragments) * final punctuation * balanced brackets.

    A fragment has fewer than `MIN_SENTENCE_WORDS` words or ends on a `DANGLING_WORDS` word.
    Text that does not end in ".", "!" or "?" (closing quotes or brackets after it allowed) gets
    `aspects.MISSING_FINAL_PUNCT_FACTOR`; unbalanced "()", "[]" or double quotes get
    `UNBALANCED_FACTOR`. Sentences are `text.sentences`, so "D.C. is" splits into a fragment.
    0.0 for no sentence.
    """
    parts = [TOKEN_RE.findall(s.lower()) for s in sentences(text)]
    if not parts:
        return 0.0
    fragments = sum(len(p) < MIN_SENTENCE_WORDS or p[-1] in DANGLING_WORDS for p in parts)
    punct = 1.0 if FINAL_PUNCT_RE.search(text.strip()) else MISSING_FINAL_PUNCT_FACTOR
    balanced = (
        text.count("(") == text.count(")")
        and text.count("[") == text.count("]")
        and text.count('"') % 2 == 0
        and text.count("\u201c") == text.count("\u201d")
    )
    return (1 - fragments / len(parts)) * punct * (1.0 if balanced else UNBALANCED_FACTOR)


# -- helpers -------------------------------------------------------------------------------------

# Two or more letters said three or more times in a row ("TheTheThe", "hahaha"); case-blind.
_CHUNK_REPEAT = re.compile(r"([^\W\d_]{2,}?)\1{2,}", re.IGNORECASE)


def _chars_in_runs(piece: str) -> int:
    """Characters of a white-space-free piece inside a character run or a chunk repeat (word
    loops across spaces are the stutter and bigram checks' business)."""
    covered: set[int] = set()
    for rx in (CHAR_RUN_RE, _CHUNK_REPEAT):
        for m in rx.finditer(piece):
            covered.update(range(m.start(), m.end()))
    return len(covered)


def _stutters(words: list[str]) -> int:
    """Words that repeat the word before them or complete a repeat of the bigram before them."""
    return sum(
        words[i] == words[i - 1] or (i >= 3 and words[i - 1 : i + 1] == words[i - 3 : i - 1])
        for i in range(1, len(words))
    )


def _example_words(example: Example) -> frozenset[str]:
    """Lower-cased words of the example's titles, context sentences and question."""
    parts = [example.question, *(f"{p.title} {p.text}" for p in example.context)]
    return vocabulary_of(parts)


def _ramp(x: float, bad: float, good: float) -> float:
    """0.0 at `bad`, 1.0 at `good`, linear in between and clipped (either order of the two)."""
    return min(1.0, max(0.0, (x - bad) / (good - bad)))
