"""The `gsm8k`, `strategyqa` and `commonsenseqa` dataset options, read in their official formats."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmgcot.answers.typed import canonical_number
from lmgcot.data.example import Example
from lmgcot.data.official import OfficialFormatDataset
from lmgcot.data.records import (
    check_unique_ids,
    json_type,
    load_json_list,
    read_text,
    typed_field,
)
from lmgcot.errors import ConfigError, DataError

# What may follow GSM8K's "####": a plain number, possibly with sign, thousands commas, decimals.
_GSM8K_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
# GSM8K's calculator annotations, "<<48/2=24>>": tool calls, not part of the written reasoning.
_CALCULATOR = re.compile(r"<<[^<>]*>>")

Fail = Callable[[str], DataError]


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


# --- GSM8K ------------------------------------------------------------------------------------


def read_gsm8k(path: str | Path) -> list[Example]:
    """Read and fully validate a GSM8K JSONL file; the first problem raises `DataError`."""
    source, stem = str(path), Path(path).stem
    return [
        gsm8k_record_to_example(raw, source, f"line {n}", f"{stem}-{n}")
        for n, raw in load_jsonl(Path(path), source)
    ]


def gsm8k_record_to_example(raw: Any, source: str, label: str, rid: str) -> Example:
    """One `{"question", "answer"}` record -> `Example` with id `rid`; errors name it `label`.

    The answer is the number after the last `####`; the rationale is the solution before it, without
    calculator annotations and with whitespace collapsed.
    """
    fail = _failer(source, label)
    record = _object(raw, fail)
    question = _text_field(record, "question", fail)
    solution = _text_field(record, "answer", fail)
    worked, marker, final = solution.rpartition("####")
    if not marker:
        raise fail("answer has no '#### <number>' line")
    number = final.strip()
    if not _GSM8K_NUMBER.fullmatch(number):
        raise fail(f"answer ends in '#### {number}', expected a number after '####'")
    rationale = " ".join(_CALCULATOR.sub("", worked).split())
    return Example(
        id=rid,
        question=question,
        answer=canonical_number(number),
        context=(),
        type="gsm8k",
        answer_type="number",
        rationale=rationale or None,
    )


# --- StrategyQA -------------------------------------------------------------------------------


def read_strategyqa(path: str | Path) -> list[Example]:
    """Read and fully validate a StrategyQA JSON file; the first problem raises `DataError`."""
    source = str(path)
    records = load_json_list(Path(path), source)
    examples = [strategyqa_record_to_example(raw, source, f"#{i}") for i, raw in enumerate(records)]
    check_unique_ids(examples, source, "qid")
    return examples


def strategyqa_record_to_example(raw: Any, source: str, label: str) -> Example:
    """One StrategyQA record -> `Example` ("yes"/"no", facts as the rationale). Errors name the
    record by its `qid` when it has one, else by `label`."""
    if isinstance(raw, Mapping) and isinstance(raw.get("qid"), str) and raw["qid"].strip():
        label = raw["qid"]
    fail = _failer(source, label)
    record = _object(raw, fail)
    if "answer" not in record:
        raise fail(_unlabelled("answer", "StrategyQA test file"))
    qid = _text_field(record, "qid", fail)
    question = _text_field(record, "question", fail)
    answer = typed_field(record, "answer", bool, "a boolean (true or false)", fail)
    facts = _string_list(record, "facts", fail)
    _string_list(record, "decomposition", fail)  # unused, but a malformed one means a bad file
    rationale = " ".join(f.strip() for f in facts if f.strip())
    return Example(
        id=qid,
        question=question,
        answer="yes" if answer else "no",
        context=(),
        type="strategyqa",
        answer_type="yes_no",
        rationale=rationale or None,
    )


# --- CommonsenseQA ----------------------------------------------------------------------------


def read_commonsenseqa(path: str | Path) -> list[Example]:
    """Read and fully validate a CommonsenseQA JSONL file; the first problem raises `DataError`."""
    source = str(path)
    lines = load_jsonl(Path(path), source)
    examples = [commonsenseqa_record_to_example(raw, source, f"line {n}") for n, raw in lines]
    check_unique_ids(examples, source, "id", [f"line {n}" for n, _ in lines])
    return examples


def commonsenseqa_record_to_example(raw: Any, source: str, label: str) -> Example:
    """One official CommonsenseQA record -> `Example`: the question lists the choices as
    "stem Answer Choices: (A) text (B) text ...", the answer is the letter. Errors name it `label`."""
    fail = _failer(source, label)
    record = _object(raw, fail)
    if "answerKey" not in record:
        raise fail(_unlabelled("answerKey", "CommonsenseQA test file"))
    rid = _text_field(record, "id", fail)
    key = typed_field(record, "answerKey", str, "a string", fail)
    body = typed_field(record, "question", Mapping, "an object", fail)
    stem = _text_field(body, "stem", fail, "question.stem")
    choices = typed_field(body, "choices", list, "a list", fail, "question.choices")
    if not choices:
        raise fail("question.choices is empty")
    labels: list[str] = []
    parts = []
    for i, choice in enumerate(choices):
        where = f"question.choices[{i}]"
        if not isinstance(choice, Mapping):
            raise fail(f"{where} is {json_type(choice)}, expected an object")
        letter = _text_field(choice, "label", fail, f"{where}.label")
        text = _text_field(choice, "text", fail, f"{where}.text")
        if letter in labels:
            raise fail(f"{where} repeats label {letter!r}")
        labels.append(letter)
        parts.append(f"({letter}) {text.strip()}")
    if key not in labels:
        raise fail(f"answerKey {key!r} is not one of the choice labels {', '.join(labels)}")
    return Example(
        id=rid,
        question=f"{stem.strip()} Answer Choices: {' '.join(parts)}",
        answer=key,
        context=(),
        type="commonsenseqa",
        answer_type="choice",
    )


def commonsenseqa_hub_record_to_example(
    raw: Mapping[str, Any], source: str = "hub", index: int = 0
) -> Example:
    """One `tau/commonsense_qa` record (`question` the stem, column-style `choices`) -> `Example`.

    The record is rewritten into the official shape and then goes through
    `commonsenseqa_record_to_example`, so hub data gets exactly the same checks as local files.
    """
    rid = raw.get("id") if isinstance(raw, Mapping) else None
    label = rid if isinstance(rid, str) and rid.strip() else f"#{index}"
    if not isinstance(raw, Mapping) or isinstance(raw.get("question"), Mapping):
        return commonsenseqa_record_to_example(raw, source, label)
    official = {
        k: v for k, v in raw.items() if k not in ("question", "question_concept", "choices")
    }
    body: dict[str, Any] = {}
    if "question" in raw:
        body["stem"] = raw["question"]
    if "question_concept" in raw:
        body["question_concept"] = raw["question_concept"]
    if "choices" in raw:
        body["choices"] = _choice_rows(raw["choices"], source, label)
    official["question"] = body
    return commonsenseqa_record_to_example(official, source, label)


def _choice_rows(value: Any, source: str, label: str) -> Any:
    """Hub columns {"label": [...], "text": [...]} -> official [{"label", "text"}, ...]. Anything
    else is passed through for `commonsenseqa_record_to_example` to judge."""
    if not isinstance(value, Mapping):
        return value
    columns = []
    for key in ("label", "text"):
        column = value.get(key)
        if not isinstance(column, Sequence) or isinstance(column, str):
            raise DataError(source, f"field 'choices' has no '{key}' list", label)
        columns.append(column)
    if len(columns[0]) != len(columns[1]):
        raise DataError(
            source, "field 'choices' columns 'label' and 'text' differ in length", label
        )
    return [{"label": a, "text": b} for a, b in zip(*columns, strict=True)]


# --- shared -----------------------------------------------------------------------------------


def load_jsonl(path: Path, source: str) -> list[tuple[int, Any]]:
    """The records of a JSONL file with their (1-based) line numbers; blank lines are skipped."""
    records = []
    # Split on newlines only: `splitlines` would also split inside strings holding U+2028 and kin.
    for n, line in enumerate(read_text(path, source).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append((n, json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(
                source, f"bad JSON at column {err.colno}: {err.msg}", f"line {n}"
            ) from None
    return records


def _failer(source: str, label: str) -> Fail:
    return lambda problem: DataError(source, problem, label)


def _object(raw: Any, fail: Fail) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise fail(f"is {json_type(raw)}, expected an object")
    return raw


def _text_field(record: Mapping[str, Any], name: str, fail: Fail, shown: str | None = None) -> str:
    """A required non-empty string field."""
    value = typed_field(record, name, str, "a string", fail, shown)
    if not value.strip():
        raise fail(f"{shown or name} is empty")
    return value


def _string_list(record: Mapping[str, Any], name: str, fail: Fail) -> list[str]:
    """An optional list-of-strings field ([] when absent or null)."""
    value = record.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(f"field '{name}' is {json_type(value)}, expected a list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise fail(f"{name}[{i}] is {json_type(item)}, expected a string")
    return value


def _unlabelled(key: str, test_file: str) -> str:
    return (
        f"missing field '{key}': the record is unlabelled (the official {test_file} has no answers)"
    )
