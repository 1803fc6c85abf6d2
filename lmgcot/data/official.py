"""File-backed datasets in an official format: the source selection (one file, train + eval
files, or the HF hub) they share, with the HotpotQA-style format (hotpotqa, 2wiki) as the default.

The HotpotQA-style records are read in `hotpot_format`, the format-independent checks are in
`records`."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmgcot.data.base import QADataset
from lmgcot.data.example import Example, Splits
from lmgcot.data.hotpot_format import hub_record_to_example, read_examples
from lmgcot.data.records import check_unique_ids
from lmgcot.errors import ConfigError, DataError

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


class OfficialFormatDataset(QADataset):
    """A dataset read from files in the official HotpotQA-style JSON format, or from the HF hub.

    Sources, in order of precedence (exactly one is used):
      path: one local file; split by `split_fractions` with `seed`.
      train_path + eval_path: official train and dev files; train -> train, dev halves -> val/test.
      hub_name (+ hub_config): `datasets.load_dataset`; hub train -> train/val (val is a seeded
        slice of `max_val` records, or 10%), hub `hub_eval_split` -> test.

    Datasets in other official formats (`lmgcot.data.reasoning_official`) keep these sources and
    override `read_file` (one file -> validated examples) and `hub_record` (one hub record ->
    `Example`).
    """

    allowed_types: tuple[str, ...] | None = None  # None: any non-empty string
    sample_file: Path | None = None
    file_kind = "JSON file"  # what `dataset.path` holds, for the no-source message
    id_name = "_id"  # the record field holding the id, for duplicate and leak messages
    hub_eval_split = "validation"  # the hub split that becomes test

    def __init__(
        self,
        path: str | None = None,
        train_path: str | None = None,
        eval_path: str | None = None,
        hub_name: str | None = None,
        hub_config: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if path and (train_path or eval_path):
            raise ConfigError(
                f"{self.name}: set either dataset.path or dataset.train_path/dataset.eval_path, "
                "not both"
            )
        if bool(train_path) != bool(eval_path):
            raise ConfigError(
                f"{self.name}: dataset.train_path and dataset.eval_path must be set together "
                f"(got train_path={train_path!r}, eval_path={eval_path!r})"
            )
        if not (path or train_path or hub_name):
            raise ConfigError(
                f"{self.name}: no data source: set dataset.path to a local {self.file_kind} "
                "(or dataset.train_path and dataset.eval_path, or dataset.hub_name)"
            )
        self.path = str(path) if path else None
        self.train_path = str(train_path) if train_path else None
        self.eval_path = str(eval_path) if eval_path else None
        self.hub_name, self.hub_config = hub_name, hub_config

    def load_splits(self) -> Splits:
        if self.path:
            return self.split(self.read_file(self.path))
        if self.train_path and self.eval_path:
            train = self.read_file(self.train_path)
            dev = self.read_file(self.eval_path)
            _check_disjoint(train, dev, self.train_path, self.eval_path, self.id_name)
            return self.split_train_dev(train, dev)
        return self.load_hub()

    def read_file(self, path: str) -> list[Example]:
        """One local file -> its examples, every record validated (ids unique within the file)."""
        return read_examples(path, self.allowed_types)

    def hub_record(self, raw: Mapping[str, Any], source: str, index: int, split: str) -> Example:
        """Record `index` of hub split `split` (named `source` in errors) -> `Example`."""
        return hub_record_to_example(raw, source, index, self.allowed_types)

    def split_train_dev(self, train: list[Example], dev: list[Example]) -> Splits:
        """Train file -> train; dev file shuffled and halved -> val/test. Seeded, then capped."""
        rng = random.Random(self.seed)
        # Shuffle train too, so that a `max_train` cap takes a random subset, not the file's head.
        train, dev = list(train), list(dev)
        rng.shuffle(train)
        rng.shuffle(dev)
        half = len(dev) // 2
        return self.cap(Splits(train, dev[:half], dev[half:]))

    def split_hub(self, train: list[Example], test: list[Example]) -> Splits:
        """Hub train -> train/val (val: `max_val` records or 10%, seeded); the eval split -> test."""
        pool = list(train)
        random.Random(self.seed).shuffle(pool)
        n_val = (
            round(0.1 * len(pool)) if self.max_val is None else min(int(self.max_val), len(pool))
        )
        return self.cap(Splits(pool[n_val:], pool[:n_val], list(test)))

    def load_hub(self) -> Splits:
        """Download (or reuse the HF cache of) `hub_name`/`hub_config` and convert every record."""
        import datasets  # imported here: slow to import, and only this source needs it

        args = (self.hub_name,) if self.hub_config is None else (self.hub_name, self.hub_config)
        ds = datasets.load_dataset(*args)
        where = self.hub_name if self.hub_config is None else f"{self.hub_name}/{self.hub_config}"
        hub_splits = ("train", self.hub_eval_split)
        for needed in hub_splits:
            if needed not in ds:
                raise ConfigError(
                    f"{self.name}: hub dataset {where} has splits {sorted(ds)}, "
                    f"need 'train' and '{self.hub_eval_split}'"
                )
        splits = {}
        for hub_split in hub_splits:
            source = f"{where}[{hub_split}]"
            examples = [
                self.hub_record(rec, source, i, hub_split) for i, rec in enumerate(ds[hub_split])
            ]
            check_unique_ids(examples, source, self.id_name)
            splits[hub_split] = examples
        return self.split_hub(*(splits[name] for name in hub_splits))


def _check_disjoint(
    train: list[Example], dev: list[Example], train_src: str, dev_src: str, id_name: str
) -> None:
    # A question in both files would leak evaluation data into training.
    train_ids = {ex.id for ex in train}
    for ex in dev:
        if ex.id in train_ids:
            raise DataError(dev_src, f"{id_name} also appears in the train file {train_src}", ex.id)
