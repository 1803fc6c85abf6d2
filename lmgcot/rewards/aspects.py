"""The eight reference-free rationale-quality aspects as `auto` measures, each scaled to [0, 1].

Every measure has the same batched signature, in the manner of reward functions in RL libraries:

    f(examples: list[Example], rationales: list[str], **extra) -> list[float]

`extra` carries what some measures need beyond the text: `answers` (the large LM's answers, for
consistency) and `token_logprobs` (the reference model's per-token log-probabilities, for fluency).
Measures ignore the extras they do not use, so a caller can pass the same keywords to all of them.

Text handling (sentences, content words, stop words) lives in `lmgcot.rewards.text`. Sentence-level
measures (factuality, logicality, coherence) only look at sentences that have at least one content
word. An empty (or whitespace-only) rationale scores 0.0 on every measure.

Each docstring ends with the measure's known failure modes: how a policy can raise it without
writing a better rationale, and what it cannot see. Most are surface statistics that degenerate
text can max out, which is why `RewardScorer` multiplies them by the well-formedness gate
(`lmgcot.rewards.wellformed`) by default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from lmgcot.answers.extract import split_rationale_answer
from lmgcot.answers.metrics import normalize_answer
from lmgcot.data.example import Example
from lmgcot.rewards.text import (
    CHAR_RUN_RE,
    FINAL_PUNCT_RE,
    WORD_RE,
    check_lengths,
    content_sentences,
    content_words,
    count_syllables,
    mean_adjacent_jaccard,
    require,
    score_steps,
    sentences,
    share_linked_to_earlier,
)

AspectFn = Callable[..., list[float]]

# A sentence is supported when MORE than this share of its content words occur in one context
# sentence ("most of its words"); 0.5 lets one unmatched word through in a three-word sentence.
SUPPORT_THRESHOLD = 0.5
# Naturalness: the factor applied when the rationale does not end in ".", "!" or "?".
MISSING_FINAL_PUNCT_FACTOR = 0.5
# Normalised yes/no answers: consistency cannot read them off the rationale's facts.
_YES_NO = frozenset({"yes", "no"})


def factuality(examples: Sequence[Example], rationales: Sequence[str], **extra) -> list[float]:
    """Share of the rationale's sentences supported by the context.

    A sentence is supported when more than `SUPPORT_THRESHOLD` (half) of its distinct content
    words occur in a single context sentence. Each context sentence is read together with its
    paragraph's title, because Wikipedia-style sentences refer to the title entity by pronoun
    ("He was born in ..."). No sentence with content words gives 0.0.

    Failure modes: word overlap is not entailment, so negations ("X was not born in Y"), swapped
    roles and facts from a distractor paragraph (the wrong bridge) all count as supported; copying
    context sentences scores 1.0 whatever they are about; paraphrases and synonyms count as
    unsupported; a sentence with one or two content words needs only one or two matches.
    """
    check_lengths(examples, rationales)
    out = []
    for example, rationale in zip(examples, rationales):
        steps = content_sentences(rationale)
        if not steps:
            out.append(0.0)
            continue
        evidence = [
            set(content_words(f"{p.title} {s}")) for p in example.context for s in p.sentences
        ]
        supported = sum(
            any(len(step & ev) / len(step) > SUPPORT_THRESHOLD for ev in evidence) for step in steps
        )
        out.append(supported / len(steps))
    return out


def relevance(examples: Sequence[Example], rationales: Sequence[str], **extra) -> list[float]:
    """Recall of the question's distinct content words among the rationale's content words.

    Recall rather than an F-measure: a good multi-hop rationale must name entities the question
    does not (the bridge), so precision against the question would punish exactly those. Padding
    is held back by the other aspects and the task reward. A question without content words gives
    0.5 (nothing to be relevant to); an empty rationale gives 0.0.

    Failure modes: restating the question scores 1.0 (as does listing its words in any order); it
    cannot tell whether the rationale reaches what is asked, only whether it mentions it.
    """
    check_lengths(examples, rationales)
    out = []
    for example, rationale in zip(examples, rationales):
        said = set(content_words(rationale))
        if not said:
            out.append(0.0)
            continue
        asked = set(content_words(example.question))
        out.append(len(asked & said) / len(asked) if asked else 0.5)
    return out


def logicality(examples: Sequence[Example], rationales: Sequence[str], **extra) -> list[float]:
    """Share of the sentences after the first that build on an earlier one.

    A sentence builds on the earlier ones when it shares at least one content word (in practice an
    entity or value) with any of them, as the hops of a reasoning chain do ("A was born in B. B is
    in C."). A single sentence scores 1.0: it has nothing to fail to connect to.

    Failure modes: one sentence (even junk such as "bral was.") scores 1.0; repeating any one
    entity in every sentence scores 1.0; a shared word is not an inference, so a chain that links
    through the wrong bridge or draws a wrong conclusion scores like a valid one.
    """
    check_lengths(examples, rationales)
    return [score_steps(r, share_linked_to_earlier) for r in rationales]


def consistency(examples: Sequence[Example], rationales: Sequence[str], **extra) -> list[float]:
    """Agreement between the rationale and the large LM's answer guided by it (`extra["answers"]`).

    Compared after `normalize_answer`, in this order:

    * an empty rationale: 0.0 (it supports nothing);
    * a missing (None or empty) large-LM answer: 0.5 (nothing to agree with);
    * the rationale states an answer with an answer phrase ("So the answer is X"; see
      `lmgcot.answers.extract.split_rationale_answer`): 1.0 when it equals the large LM's, else 0.0;
    * otherwise (student rationales are trained without the answer sentence) the rationale supports
      the answer when it names it: 1.0 when the answer occurs anywhere in the rationale as whole
      words ("Alice was born in Paris." and "Paris"), else 0.0, since the large LM then answered
      something the rationale does not mention;
    * except yes/no answers without a stated answer: 0.5. Whether stated facts imply "yes" or "no"
      ("A was born in X. B was born in Y." for "same city?") needs the question's logic, and no
      simple rule holds across datasets.

    Failure modes: naming is not supporting. Comparison questions name both candidates, so either
    answer scores 1.0; a rationale that lists many context entities agrees with most answers; a
    wrong bridge that misleads the large LM is "consistent" with the wrong answer it causes
    (consistency is not correctness: that is the task reward). Yes/no questions carry no signal
    unless the rationale states its answer. Aliases ("NYC" for "New York City") count as
    disagreement.
    """
    check_lengths(examples, rationales)
    answers = require(extra, "answers", "the large LM's answers, one per rationale")
    check_lengths(rationales, answers, "answers")
    out = []
    for rationale, answer in zip(rationales, answers):
        target = normalize_answer(answer or "")
        _, stated = split_rationale_answer(rationale)
        if not rationale.strip():
            out.append(0.0)
        elif not target:
            out.append(0.5)
        elif stated:
            out.append(float(normalize_answer(stated) == target))
        elif target in _YES_NO:
            out.append(0.5)
        else:
            out.append(float(f" {target} " in f" {normalize_answer(rationale)} "))
    return out


def coherence(examples: Sequence[Example], rationales: Sequence[str], **extra) -> list[float]:
    """Mean Jaccard overlap of the content-word sets of adjacent sentences.

    A single sentence scores 1.0 (no seam between sentences to be incoherent at); an empty
    rationale scores 0.0. Unlike logicality this rewards each step following on from the one just
    before it, and rewards sharing many words, not one.

    Failure modes: one sentence (even junk) scores 1.0, and saying the same sentence twice scores
    1.0, so RL drives it towards one-sentence or looping text; a sound multi-hop chain whose
    sentences share only the bridge entity scores low ("Alice Smith was born in Paris. Paris is
    in France." gets 1/5).
    """
    check_lengths(examples, rationales)
    return [score_steps(r, mean_adjacent_jaccard) for r in rationales]


def fluency(examples: Sequence[Example], rationales: Sequence[str], **extra) -> list[float]:
    """exp(mean per-token log-probability) under the reference model (`extra["token_logprobs"]`).

    This is the inverse perplexity, in [0, 1]. The log-probabilities come from the caller (the RL
    stage already computes them for the KL term), one list of floats per rationale; an empty list
    (an empty rationale) scores 0.0. NaN log-probabilities raise ValueError.

    Failure modes: it measures closeness to the reference model, not English, so it is only as good
    as the reference (a tiny distilled student); short, formulaic and repetitive text is likely,
    and loops grow more likely the longer they run; it rewards the reference's own mistakes.
    """
    check_lengths(examples, rationales)
    logprobs = require(
        extra, "token_logprobs", "per-token log-probabilities, one list per rationale"
    )
    check_lengths(rationales, logprobs, "token_logprobs")
    out = []
    for i, values in enumerate(logprobs):
        values = [float(v) for v in values]
        if any(math.isnan(v) for v in values):
            raise ValueError(f"fluency: token_logprobs[{i}] contains NaN")
        if not values:
            out.append(0.0)
            continue
        # Clipped at 1: a log-probability above 0 can only be numerical noise.
        out.append(min(1.0, math.exp(sum(values) / len(values))))
    return out


def naturalness(examples: Sequence[Example], rationales: Sequence[str], **extra) -> list[float]:
    """Penalty for degenerate text: distinct2 * runs * punct.

    * distinct2: distinct word bigrams / all word bigrams (lower-cased words; 1.0 with fewer than
      two words), which falls as a rationale loops on itself;
    * runs: 1 - (share of non-space characters that sit in a run of `text.CHAR_RUN_LENGTH` or more
      identical non-digit characters), for "!!!!!!" or "nooooo";
    * punct: 1.0 when the text ends in ".", "!" or "?" (closing quotes or brackets after it
      allowed), else `MISSING_FINAL_PUNCT_FACTOR`, since generation cut off mid-sentence is a
      typical degenerate output.

    A product, so any one defect is enough to pull the score down.

    Failure modes: only surface degeneracy: word salad of distinct words, a single short sentence
    ("X." scores 1.0), made-up words and punctuated fragments ("was born in.") all pass; rationales
    that restate similar facts ("A came out in 1970. B came out in 1953.") legitimately lose some
    distinct bigrams.
    """
    check_lengths(examples, rationales)
    out = []
    for rationale in rationales:
        text = rationale.strip()
        if not text:
            out.append(0.0)
            continue
        words = WORD_RE.findall(text.lower())
        bigrams = list(zip(words, words[1:]))
        distinct2 = len(set(bigrams)) / len(bigrams) if bigrams else 1.0
        chars = re.sub(r"\s+", "", text)
        in_runs = sum(len(m.group(0)) for m in CHAR_RUN_RE.finditer(chars))
        runs = 1.0 - in_runs / len(chars)
        punct = 1.0 if FINAL_PUNCT_RE.search(text) else MISSING_FINAL_PUNCT_FACTOR
        out.append(distinct2 * runs * punct)
    return out


def readability(examples: Sequence[Example], rationales: Sequence[str], **extra) -> list[float]:
    """Flesch reading ease, clipped to [0, 100] and divided by 100.

    FRE = 206.835 - 1.015 * words / sentences - 84.6 * syllables / words, with sentences from
    `sentences`, words from `text.WORD_RE` and syllables from `count_syllables` (a number counts one
    syllable per digit). No words gives 0.0.

    Failure modes: it rewards short words in short sentences, whatever they say: "in in in." and
    "bral was" reach the top; invented names (the synthetic dataset's, long years read digit by
    digit) lower it for reasons that have nothing to do with the writing; the syllable count is a
    vowel-group heuristic.
    """
    check_lengths(examples, rationales)
    out = []
    for rationale in rationales:
        words = WORD_RE.findall(rationale)
        if not words:
            out.append(0.0)
            continue
        n_sentences = max(1, len(sentences(rationale)))
        syllables = sum(count_syllables(w) for w in words)
        fre = 206.835 - 1.015 * len(words) / n_sentences - 84.6 * syllables / len(words)
        out.append(min(100.0, max(0.0, fre)) / 100.0)
    return out


# Every aspect: its `auto` measure and what the judge (reward.scorer=judge) is told it means,
# worded to match the measure's intent. Adding an aspect is a function, one entry here, and a
# conf/reward/<name>.yaml naming its weight.
ASPECT_REGISTRY: dict[str, tuple[AspectFn, str]] = {
    "factuality": (factuality, "every statement is supported by the context"),
    "relevance": (relevance, "it addresses what the question asks"),
    "logicality": (logicality, "each step follows from the earlier ones towards the answer"),
    "consistency": (
        consistency,
        "its statements agree with each other and with its conclusion",
    ),
    "coherence": (coherence, "consecutive sentences connect into one line of reasoning"),
    "fluency": (fluency, "it reads as grammatical, well-formed English"),
    "naturalness": (
        naturalness,
        "it reads like human writing, without repetition or garbled text",
    ),
    "readability": (readability, "it is easy to read and understand"),
}
ASPECTS: dict[str, AspectFn] = {name: fn for name, (fn, _) in ASPECT_REGISTRY.items()}
ASPECT_DESCRIPTIONS: dict[str, str] = {name: d for name, (_, d) in ASPECT_REGISTRY.items()}
