"""The official CommonsenseQA format (JSONL records with `id`, `answerKey` and a `question` holding
the stem and lettered choices) and the HF hub's column-style copy of it; one record -> a validated
`Example`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmgcot.data.example import Example
from lmgcot.data.records import (
    as_object,
    check_unique_ids,
    failer,
    json_type,
    load_jsonl,
    text_field,
    typed_field,
    unlabelled,
)
from lmgcot.errors import DataError

# Every CommonsenseQA question has five choices; a record with fewer is a damaged copy.
CHOICES = 5


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
    fail = failer(source, label)
    record = as_object(raw, fail)
    if "answerKey" not in record:
        raise fail(unlabelled("answerKey", "CommonsenseQA test file"))
    rid = text_field(record, "id", fail)
    key = typed_field(record, "answerKey", str, "a string", fail)
    body = typed_field(record, "question", Mapping, "an object", fail)
    stem = text_field(body, "stem", fail, "question.stem")
    choices = typed_field(body, "choices", list, "a list", fail, "question.choices")
    if not choices:
        raise fail("question.choices is empty")
    labels: list[str] = []
    parts = []
    for i, choice in enumerate(choices):
        where = f"question.choices[{i}]"
        if not isinstance(choice, Mapping):
            raise fail(f"{where} is {json_type(choice)}, expected an object")
        letter = text_field(choice, "label", fail, f"{where}.label")
        text = text_field(choice, "text", fail, f"{where}.text")
        if letter in labels:
            raise fail(f"{where} repeats label {letter!r}")
        labels.append(letter)
        parts.append(f"({letter}) {text.strip()}")
    if len(labels) != CHOICES:
        raise fail(
            f"question.choices has {len(labels)} of the {CHOICES} choices every question has"
        )
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
