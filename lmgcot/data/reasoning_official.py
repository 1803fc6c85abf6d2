"""The `gsm8k`, `strategyqa` and `commonsenseqa` dataset options, read in their official formats
(each format in its own module: `gsm8k_format`, `strategyqa_format`, `commonsenseqa_format`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmgcot.data.commonsenseqa_format import commonsenseqa_hub_record_to_example, read_commonsenseqa
from lmgcot.data.example import Example
from lmgcot.data.gsm8k_format import gsm8k_record_to_example, read_gsm8k
from lmgcot.data.official import OfficialFormatDataset
from lmgcot.data.strategyqa_format import read_strategyqa, strategyqa_record_to_example
from lmgcot.errors import ConfigError


class GSM8K(OfficialFormatDataset):
    """GSM8K grade-school maths word problems: numeric answers, worked solutions as rationales.

    path / train_path+eval_path: JSONL files as released (`train.jsonl`, `test.jsonl`). They have
      no ids, so an example's id is `<file stem>-<line>`; train and eval files need different names.
    hub_name/hub_config: `gsm8k`/`main`; hub train -> train/val, hub test -> test.
    Other keyword arguments go to `QADataset` (max_*, split_fractions, seed).
    """

    name = "gsm8k"
    file_kind = "JSONL file"
    id_name = "id"
    hub_eval_split = "test"

    def __init__(
        self,
        path: str | None = None,
        train_path: str | None = None,
        eval_path: str | None = None,
        hub_name: str | None = "gsm8k",
        hub_config: str | None = "main",
        **kwargs: Any,
    ):
        super().__init__(path, train_path, eval_path, hub_name, hub_config, **kwargs)
        if train_path and eval_path and Path(train_path).stem == Path(eval_path).stem:
            # Ids are `<stem>-<line>`: both files would number their questions alike.
            raise ConfigError(
                f"gsm8k: dataset.train_path and dataset.eval_path share the file name "
                f"{Path(train_path).stem!r}; example ids are <file name>-<line>, so rename one"
            )

    def read_file(self, path: str) -> list[Example]:
        return read_gsm8k(path)

    def hub_record(self, raw: Mapping[str, Any], source: str, index: int, split: str) -> Example:
        # The hub splits hold the official files' lines in order: the same ids as those files.
        rid = f"{split}-{index + 1}"
        return gsm8k_record_to_example(raw, source, rid, rid)


class StrategyQA(OfficialFormatDataset):
    """StrategyQA yes/no questions needing implicit multi-step reasoning; facts as rationales.

    path / train_path+eval_path: JSON files as released (a list of records with `qid`, `question`,
      boolean `answer`, optional `facts`, `decomposition`, ...). Only the train file is labelled.
    hub_name/hub_config: there is no canonical hub copy, so none is assumed; a named one must have
      the same fields (splits train -> train/val, validation -> test).
    Other keyword arguments go to `QADataset` (max_*, split_fractions, seed).
    """

    name = "strategyqa"
    id_name = "qid"

    def read_file(self, path: str) -> list[Example]:
        return read_strategyqa(path)

    def hub_record(self, raw: Mapping[str, Any], source: str, index: int, split: str) -> Example:
        return strategyqa_record_to_example(raw, source, f"#{index}")


class CommonsenseQA(OfficialFormatDataset):
    """CommonsenseQA five-way multiple choice; the answer is a choice letter, there is no rationale.

    path / train_path+eval_path: JSONL files as released (`train_rand_split.jsonl`,
      `dev_rand_split.jsonl`); the official test file is unlabelled and refused.
    hub_name/hub_config: `tau/commonsense_qa`; hub train -> train/val, hub validation -> test (the
      hub test split is unlabelled).
    Other keyword arguments go to `QADataset` (max_*, split_fractions, seed).
    """

    name = "commonsenseqa"
    file_kind = "JSONL file"
    id_name = "id"

    def __init__(
        self,
        path: str | None = None,
        train_path: str | None = None,
        eval_path: str | None = None,
        hub_name: str | None = "tau/commonsense_qa",
        hub_config: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(path, train_path, eval_path, hub_name, hub_config, **kwargs)

    def read_file(self, path: str) -> list[Example]:
        return read_commonsenseqa(path)

    def hub_record(self, raw: Mapping[str, Any], source: str, index: int, split: str) -> Example:
        return commonsenseqa_hub_record_to_example(raw, source, index)
