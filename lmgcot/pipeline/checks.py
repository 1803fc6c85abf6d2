"""Checks that need the loaded data (the config's own values are checked by
`lmgcot.config.validate` before any work)."""

from __future__ import annotations

from collections.abc import Mapping

from lmgcot.data.example import Splits
from lmgcot.errors import ConfigError


def check_splits(
    splits: Splits, stages: list[str], name: str, dataset: Mapping | None = None
) -> None:
    """Refuse an empty split a stage needs, naming how the split was made and what sets its size
    (`dataset`: the dataset config)."""
    needed = {
        "train": {"teacher", "distill"} & set(stages),
        # distill keeps its best checkpoint by the val loss.
        "val": "distill" in stages,
        "test": "evaluate" in stages,
    }
    for split, examples in splits.items():
        if needed[split] and not examples:
            hint = split_hint(split, splits, dataset or {})
            raise ConfigError(f"dataset={name}: the {split} split is empty{hint}")


def split_hint(split: str, splits: Splits, dataset: Mapping) -> str:
    """How `split` was made from the dataset's source and which setting changes its size."""
    cap = dataset.get(f"max_{split}")
    if cap is not None and int(cap) == 0:
        return f" (dataset.max_{split}={cap}); raise dataset.max_{split}"
    if dataset.get("path"):
        sizes = "/".join(str(len(s)) for _, s in splits.items())
        fractions = list(dataset.get("split_fractions") or ())
        return (
            f": dataset.path's {sum(len(s) for _, s in splits.items())} records were split "
            f"train/val/test {sizes} by dataset.split_fractions={fractions}; use a larger file "
            f"or give {split} a larger fraction"
        )
    if dataset.get("eval_path"):
        if split == "train":
            return ": dataset.train_path holds no record"
        n_eval = len(splits.val) + len(splits.test)
        return (
            f": dataset.eval_path's {n_eval} records are shuffled and halved, val the first "
            "(smaller) half and test the rest; the eval file needs at least 2 records"
        )
    if f"n_{split}" in dataset:
        return f" (dataset.n_{split}={dataset.get(f'n_{split}')}); raise dataset.n_{split}"
    return ""
