"""Format-independent checks of a data file and its records, shared by every official format:
the file's text, a JSON list or JSONL file of records, typed fields, unique ids, and JSON type
names for messages."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmgcot.data.example import Example
from lmgcot.errors import DataError

# Python's parser recurses once per nesting level: no record of ours nests anywhere near this.
TOO_DEEP = "JSON nested too deeply (thousands of levels of lists or objects): not a data file"

# Builds the `DataError` for one problem with one record (see `failer`).
Fail = Callable[[str], DataError]


def read_text(path: Path, source: str) -> str:
    """A data file's text; a missing, non-UTF-8 or empty file raises `DataError`."""
    if not path.is_file():
        raise DataError(source, "file not found" if not path.exists() else "not a file")
    try:
        # utf-8-sig: editors on Windows save UTF-8 with a byte-order mark, which is no data.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(source, f"not UTF-8 text (byte {err.start})") from None
    if not text.strip():
        raise DataError(source, "empty file")
    return text


def load_json_list(path: Path, source: str) -> list[Any]:
    """A JSON file holding a non-empty list of records (not yet checked)."""
    try:
        data = json.loads(read_text(path, source))
    except json.JSONDecodeError as err:
        raise DataError(
            source, f"bad JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None
    except RecursionError:
        raise DataError(source, TOO_DEEP) from None
    if not isinstance(data, list):
        raise DataError(source, f"top level is {json_type(data)}, expected a list of records")
    if not data:
        raise DataError(source, "no records (an empty list)")
    return data


def typed_field(
    raw: Mapping[str, Any],
    name: str,
    kind: type,
    expected: str,
    fail: Fail,
    shown: str | None = None,
) -> Any:
    """A required field of type `kind`; `shown` is its name in messages (dotted when nested)."""
    shown = shown or name
    if name not in raw:
        raise fail(f"missing field '{shown}'")
    value = raw[name]
    if not isinstance(value, kind):
        raise fail(f"field '{shown}' is {json_type(value)}, expected {expected}")
    return value


def check_unique_ids(
    examples: list[Example],
    source: str,
    id_name: str = "_id",
    places: Sequence[str] | None = None,
) -> None:
    """The first repeated id raises `DataError`; `places` name where each example came from
    ("line 7"), by default its index ("record #7")."""
    if places is None:
        places = [f"record #{i}" for i in range(len(examples))]
    first: dict[str, int] = {}
    for i, ex in enumerate(examples):
        if ex.id in first:
            raise DataError(
                source, f"duplicate {id_name} ({places[i]} repeats {places[first[ex.id]]})", ex.id
            )
        first[ex.id] = i


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


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
        except RecursionError:
            raise DataError(source, TOO_DEEP, f"line {n}") from None
    return records


def failer(source: str, label: str) -> Fail:
    """Errors about the record `label` of `source`."""
    return lambda problem: DataError(source, problem, label)


def as_object(raw: Any, fail: Fail) -> Mapping[str, Any]:
    """`raw` when it is a JSON object; anything else fails."""
    if not isinstance(raw, Mapping):
        raise fail(f"is {json_type(raw)}, expected an object")
    return raw


def text_field(record: Mapping[str, Any], name: str, fail: Fail, shown: str | None = None) -> str:
    """A required non-empty string field."""
    value = typed_field(record, name, str, "a string", fail, shown)
    if not value.strip():
        raise fail(f"{shown or name} is empty")
    return value


def string_list(record: Mapping[str, Any], name: str, fail: Fail) -> list[str]:
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


def unlabelled(key: str, test_file: str) -> str:
    """The message for a record of an official test file, which carries no answer."""
    return (
        f"missing field '{key}': the record is unlabelled (the official {test_file} has no answers)"
    )
