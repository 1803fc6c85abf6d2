"""Checks that need the loaded data (the config's own values are checked by
`lmgcot.config.validate` before any work)."""

from __future__ import annotations

from lmgcot.data.example import Splits
from lmgcot.errors import ConfigError


def check_splits(splits: Splits, stages: list[str], name: str) -> None:
    if {"teacher", "distill"} & set(stages) and not splits.train:
        raise ConfigError(f"dataset={name}: the train split is empty")
    if "evaluate" in stages and not splits.test:
        raise ConfigError(f"dataset={name}: the test split is empty")
