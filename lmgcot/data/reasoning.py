"""Fine-tune-CoT's two generated reasoning tasks, made offline by a seeded generator.

  last_letter  Take the last letters of the words in "Bora Kethin Suth Drou" and concatenate them.
               -> "anhu"
  coin_flip    A coin is heads up. Bora flips the coin. Kethin does not flip the coin. Is the coin
               still heads up?  -> "no"

Words and people are invented names (the syllable maker of `lmgcot.data.synthetic`), so no model has
seen the questions. The same seed always gives the same examples, and no question occurs in two
splits. Examples have no context (`context=()`).

Every example carries a gold `rationale` stating each step (each word's last letter and their
concatenation; the coin's state after each person), without the final answer sentence. It uses the
canonical phrasing (index 0) of `LAST_LETTER_PHRASINGS` / `COIN_PHRASINGS`; the `simulated` large LM
writes these phrasings as a CoT teacher (the canonical one when greedy) and reads any of them back
(`lmgcot.llm.simulated_reasoning`), as `RELATIONS` serve the synthetic multi-hop QA.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lmgcot.data.base import QADataset, split_sizes
from lmgcot.data.example import Example, Splits
from lmgcot.data.synthetic import _NameMaker
from lmgcot.errors import ConfigError

LAST_LETTER_QUESTION = 'Take the last letters of the words in "{words}" and concatenate them.'
COIN_START = "A coin is heads up."
COIN_FLIP = "{name} flips the coin."
COIN_STAY = "{name} does not flip the coin."
COIN_END = "Is the coin still heads up?"


@dataclass(frozen=True)
class LetterPhrasing:
    """How a last-letter rationale is worded. `per_word` steps use {word} and {letter}; otherwise
    `step` is one sentence listing all letters ({letters}) after `intro` names the words ({words})."""

    step: str
    joined: str  # {answer}: the concatenation
    per_word: bool = True
    intro: str = ""


@dataclass(frozen=True)
class CoinPhrasing:
    """How a coin-flip rationale is worded: {name} and {state} ("heads" / "tails")."""

    start: str
    flip: str
    stay: str


LAST_LETTER_PHRASINGS: tuple[LetterPhrasing, ...] = (
    LetterPhrasing(
        'The last letter of "{word}" is "{letter}".', 'Concatenating them gives "{answer}".'
    ),
    LetterPhrasing(
        '"{word}" ends with "{letter}".', 'Putting the letters together makes "{answer}".'
    ),
    LetterPhrasing(
        "Their last letters are {letters}.",
        'Together they spell "{answer}".',
        per_word=False,
        intro="The words are {words}.",
    ),
)

COIN_PHRASINGS: tuple[CoinPhrasing, ...] = (
    CoinPhrasing(
        "The coin starts heads up.",
        "{name} flips the coin, so it is now {state} up.",
        "{name} does not flip the coin, so it stays {state} up.",
    ),
    CoinPhrasing(
        "At first the coin is heads up.",
        "After {name} flips it, the coin is {state} up.",
        "{name} leaves it alone, so the coin is still {state} up.",
    ),
    CoinPhrasing(
        "We follow the coin from heads up.",
        "{name} flipped it, which turns it {state} up.",
        "{name} did not flip it; it remains {state} up.",
    ),
)


def _quoted_list(items: list[str]) -> str:
    quoted = [f'"{x}"' for x in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def last_letter_rationale(words: list[str], letters: list[str], phrasing: int = 0) -> str:
    """The rationale stating `letters` as the words' last letters (right or not) and their
    concatenation, in phrasing `phrasing` of `LAST_LETTER_PHRASINGS`."""
    p = LAST_LETTER_PHRASINGS[phrasing]
    answer = "".join(letters)
    if p.per_word:
        steps = [p.step.format(word=w, letter=c) for w, c in zip(words, letters, strict=True)]
    else:
        steps = [
            p.intro.format(words=_quoted_list(words)),
            p.step.format(letters=_quoted_list(letters)),
        ]
    return " ".join([*steps, p.joined.format(answer=answer)])


def coin_rationale(people: list[str], flips: list[bool], phrasing: int = 0) -> str:
    """The rationale tracking the coin through `flips` (who flips, as the rationale states it),
    in phrasing `phrasing` of `COIN_PHRASINGS`."""
    p = COIN_PHRASINGS[phrasing]
    heads = True
    steps = [p.start]
    for name, flip in zip(people, flips, strict=True):
        heads = heads != flip
        state = "heads" if heads else "tails"
        steps.append((p.flip if flip else p.stay).format(name=name, state=state))
    return " ".join(steps)


def coin_answer(flips: list[bool]) -> str:
    return "yes" if sum(flips) % 2 == 0 else "no"


def last_letter_question(words: list[str]) -> str:
    return LAST_LETTER_QUESTION.format(words=" ".join(words))


def coin_question(people: list[str], flips: list[bool]) -> str:
    moves = [
        (COIN_FLIP if f else COIN_STAY).format(name=n) for n, f in zip(people, flips, strict=True)
    ]
    return " ".join([COIN_START, *moves, COIN_END])


class _GeneratedTask(QADataset):
    """Seeded generation shared by both tasks: one stream per split, no question in two splits."""

    prefix = "task"

    def __init__(self, n_train: int, n_val: int, n_test: int, **kwargs):
        super().__init__(**kwargs)
        self.sizes = split_sizes(n_train, n_val, n_test)

    def load_splits(self) -> Splits:
        seen: set[str] = set()
        out = {}
        for offset, (split, size) in enumerate(self.sizes.items()):
            rng = random.Random(f"{self.name}:{self.seed}:{split}:{offset}")
            examples: list[Example] = []
            attempts = 0
            while len(examples) < size:
                attempts += 1
                if attempts > 100 * size + 1000:  # only a tiny question space gets here
                    raise ConfigError(
                        f"dataset={self.name}: cannot make {size} distinct {split} questions; "
                        "lower the sizes"
                    )
                ex = self._example(rng, f"{self.prefix}-{split}-{len(examples):05d}")
                # Duplicates are skipped, so a question never sits in two splits (or twice in one).
                if ex.question not in seen:
                    seen.add(ex.question)
                    examples.append(ex)
            out[split] = examples
        return self.cap(Splits(out["train"], out["val"], out["test"]))

    def _example(self, rng: random.Random, ex_id: str) -> Example:
        raise NotImplementedError


def _words(rng: random.Random, n: int, syllables: tuple[int, ...]) -> list[str]:
    """`n` distinct invented capitalised names of at least 3 letters."""
    maker = _NameMaker(rng)
    out: list[str] = []
    while len(out) < n:
        w = maker.word(rng.choice(syllables))
        if len(w) >= 3:
            out.append(w)
    return out


class LastLetter(_GeneratedTask):
    """Last-letter concatenation over `n_words` invented words; the answer is lower case."""

    name = "last_letter"
    prefix = "ll"

    def __init__(
        self,
        n_train: int = 2000,
        n_val: int = 200,
        n_test: int = 500,
        n_words: int = 4,
        **kwargs,
    ):
        if int(n_words) < 1:
            raise ConfigError(f"dataset.n_words={n_words}: must be >= 1")
        super().__init__(n_train, n_val, n_test, **kwargs)
        self.n_words = int(n_words)

    def _example(self, rng: random.Random, ex_id: str) -> Example:
        words = _words(rng, self.n_words, (1, 2))
        letters = [w[-1].lower() for w in words]
        return Example(
            id=ex_id,
            question=last_letter_question(words),
            answer="".join(letters),
            context=(),
            type="last_letter",
            answer_type="string",
            rationale=last_letter_rationale(words, letters),
        )


class CoinFlip(_GeneratedTask):
    """Coin flip: `n_people` invented people each flip the coin or not (a fair seeded draw)."""

    name = "coin_flip"
    prefix = "cf"

    def __init__(
        self,
        n_train: int = 2000,
        n_val: int = 200,
        n_test: int = 500,
        n_people: int = 4,
        **kwargs,
    ):
        if int(n_people) < 1:
            raise ConfigError(f"dataset.n_people={n_people}: must be >= 1")
        super().__init__(n_train, n_val, n_test, **kwargs)
        self.n_people = int(n_people)

    def _example(self, rng: random.Random, ex_id: str) -> Example:
        people = _words(rng, self.n_people, (2,))
        flips = [rng.random() < 0.5 for _ in people]
        return Example(
            id=ex_id,
            question=coin_question(people, flips),
            answer=coin_answer(flips),
            context=(),
            type="coin_flip",
            answer_type="yes_no",
            rationale=coin_rationale(people, flips),
        )
