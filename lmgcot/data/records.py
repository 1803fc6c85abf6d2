"""Format-independent checks of a data file and its records, shared by every official format:
the file's text, a JSON list of records, typed fields, unique ids, and JSON type names for
messages."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmgcot.data.example import Example
from lmgcot.errors import DataError


def read_text(path: Path, source: str) -> str:
    """A data file's text; a missing, non-UTF-8 or empty file raises `DataError`."""
    if not path.is_file():
        raise DataError(source, "file not found" if not path.exists() else "not a file")
    try:
        text = path.read_text(encoding="utf-8")
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
    fail: Callable[[str], DataError],
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
