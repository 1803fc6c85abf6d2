"""What every dataset option shares: splitting one source into train/val/test, and size limits."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod

from lmgcot.data.example import Example, Splits
from lmgcot.errors import ConfigError

CONTEXT_MODES = ("all", "supporting")


class QADataset(ABC):
    """A dataset option. `load_splits` returns train/val/test lists of `Example`.

    context: which paragraphs the models see: `all` (gold and distractors) or `supporting` (only the
      supporting-fact sentences).
    max_train/max_val/max_test: cap each split (None = no cap), applied after splitting.
    split_fractions: used when a single source holds all examples (a local file); seeded by `seed`.
    """

    name: str = "base"

    def __init__(
        self,
        context: str = "all",
        max_train: int | None = None,
        max_val: int | None = None,
        max_test: int | None = None,
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
    ):
        if context not in CONTEXT_MODES:
            raise ConfigError(f"dataset.context={context!r}: allowed values are {CONTEXT_MODES}")
        fr = tuple(float(f) for f in split_fractions)
        if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
            raise ConfigError(
                f"dataset.split_fractions={list(fr)}: need three non-negative numbers summing to 1"
            )
        self.context = context
        self.max_train, self.max_val, self.max_test = max_train, max_val, max_test
        self.split_fractions = fr
        self.seed = seed

    @abstractmethod
    def load_splits(self) -> Splits:
        """Read (or generate) and validate every example before any work is done."""

    def split(self, examples: list[Example]) -> Splits:
        """Seeded shuffle of one pool into train/val/test by `split_fractions`, then caps."""
        pool = list(examples)
        random.Random(self.seed).shuffle(pool)
        n = len(pool)
        n_train = round(n * self.split_fractions[0])
        n_val = round(n * self.split_fractions[1])
        return self.cap(
            Splits(pool[:n_train], pool[n_train : n_train + n_val], pool[n_train + n_val :])
        )

    def cap(self, splits: Splits) -> Splits:
        def take(xs, k):
            return xs if k is None else xs[: int(k)]

        return Splits(
            take(splits.train, self.max_train),
            take(splits.val, self.max_val),
            take(splits.test, self.max_test),
        )


def split_sizes(n_train: int, n_val: int, n_test: int) -> dict[str, int]:
    """{"train", "val", "test"} sizes of a generated dataset, each checked to be >= 0."""
    sizes = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    for split, value in sizes.items():
        if value < 0:
            raise ConfigError(f"dataset.n_{split}={value}: must be >= 0")
    return sizes
