"""The official GSM8K format: JSONL records `{"question", "answer"}`, the answer a worked solution
ending in "#### <number>"; one record -> a validated `Example`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lmgcot.answers.typed import canonical_number
from lmgcot.data.example import Example
from lmgcot.data.records import as_object, failer, load_jsonl, text_field

# What may follow GSM8K's "####": a plain number, possibly with sign, thousands commas, decimals.
_GSM8K_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
# GSM8K's calculator annotations, "<<48/2=24>>": tool calls, not part of the written reasoning.
_CALCULATOR = re.compile(r"<<[^<>]*>>")


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
    fail = failer(source, label)
    record = as_object(raw, fail)
    question = text_field(record, "question", fail)
    solution = text_field(record, "answer", fail)
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
