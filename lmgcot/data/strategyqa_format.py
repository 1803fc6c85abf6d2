"""The official StrategyQA format: a JSON list of records with `qid`, `question`, boolean `answer`
and optional `facts`; one record -> a validated `Example`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmgcot.data.example import Example
from lmgcot.data.records import (
    as_object,
    check_unique_ids,
    failer,
    load_json_list,
    string_list,
    text_field,
    typed_field,
    unlabelled,
)


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
    fail = failer(source, label)
    record = as_object(raw, fail)
    if "answer" not in record:
        raise fail(unlabelled("answer", "StrategyQA test file"))
    qid = text_field(record, "qid", fail)
    question = text_field(record, "question", fail)
    answer = typed_field(record, "answer", bool, "a boolean (true or false)", fail)
    facts = string_list(record, "facts", fail)
    string_list(record, "decomposition", fail)  # unused, but a malformed one means a bad file
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
