"""Reading and checking the official HotpotQA-style JSON format shared by hotpotqa and 2wiki, and
the source selection (one file, train + eval files, or the HF hub) every file-backed dataset shares."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmgcot.data.base import QADataset
from lmgcot.data.example import Example, Paragraph, Splits, SupportingFact
from lmgcot.errors import ConfigError, DataError

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
REQUIRED_FIELDS = ("_id", "question", "answer", "type", "supporting_facts", "context")


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


def read_examples(path: str | Path, allowed_types: Sequence[str] | None = None) -> list[Example]:
    """Read and fully validate one official-format file; the first problem raises `DataError`."""
    source = str(path)
    records = load_json_list(Path(path), source)
    return parse_records(records, source, allowed_types)


def parse_records(
    records: list[Any], source: str, allowed_types: Sequence[str] | None = None
) -> list[Example]:
    """Validate a list of official-format records (as loaded from JSON) and convert them."""
    examples = [parse_record(raw, source, i, allowed_types) for i, raw in enumerate(records)]
    check_unique_ids(examples, source)
    return examples


def parse_record(
    raw: Any, source: str, index: int, allowed_types: Sequence[str] | None = None
) -> Example:
    """One official-format record -> `Example`. Errors name the record by `_id`, else `#index`."""
    label = f"#{index}"
    if not isinstance(raw, Mapping):
        raise DataError(source, f"is {json_type(raw)}, expected an object", label)
    if isinstance(raw.get("_id"), str) and raw["_id"].strip():
        label = raw["_id"]

    def fail(problem: str) -> DataError:
        return DataError(source, problem, label)

    for name in REQUIRED_FIELDS:
        if name not in raw:
            raise fail(f"missing field '{name}'")
    rid = typed_field(raw, "_id", str, "a string", fail)
    question = typed_field(raw, "question", str, "a string", fail)
    answer = typed_field(raw, "answer", str, "a string", fail)
    qtype = typed_field(raw, "type", str, "a string", fail)
    if not rid.strip():
        raise fail("_id is empty")
    if not question.strip():
        raise fail("question is empty")
    if not answer.strip():
        raise fail("answer is empty")
    if not qtype.strip():
        raise fail("type is empty")
    if allowed_types is not None and qtype not in allowed_types:
        raise fail(f"type {qtype!r} is not one of {', '.join(allowed_types)}")
    level = raw.get("level")
    if level is not None and not isinstance(level, str):
        raise fail(f"field 'level' is {json_type(level)}, expected a string")

    context = _parse_context(typed_field(raw, "context", list, "a list", fail), fail)
    facts = _parse_supporting_facts(
        typed_field(raw, "supporting_facts", list, "a list", fail), context, fail
    )
    evidences = _parse_evidences(raw.get("evidences", []), fail)
    aliases = _parse_aliases(raw.get("answer_aliases", []), answer, fail)
    return Example(
        id=rid,
        question=question,
        answer=answer,
        context=context,
        supporting_facts=facts,
        type=qtype,
        level=level,
        aliases=aliases,
        evidences=evidences,
    )


def hub_record_to_example(
    raw: Mapping[str, Any],
    source: str = "hub",
    index: int = 0,
    allowed_types: Sequence[str] | None = None,
) -> Example:
    """One HF-hub record (`id`, column-style `context` and `supporting_facts`) -> `Example`.

    The record is rewritten into the official shape and then goes through `parse_record`, so hub
    data gets exactly the same checks as local files.
    """
    label = str(raw.get("id", raw.get("_id", f"#{index}")))
    official = {k: v for k, v in raw.items() if k not in ("id", "context", "supporting_facts")}
    if "_id" not in official and "id" in raw:
        official["_id"] = raw["id"]
    if "context" in raw:
        official["context"] = _columns_to_rows(
            raw["context"], ("title", "sentences"), "context", source, label
        )
    if "supporting_facts" in raw:
        official["supporting_facts"] = _columns_to_rows(
            raw["supporting_facts"], ("title", "sent_id"), "supporting_facts", source, label
        )
    return parse_record(official, source, index, allowed_types)


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


def _parse_context(entries: list[Any], fail) -> tuple[Paragraph, ...]:
    if not entries:
        raise fail("context is empty")
    paragraphs = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 2):
            raise fail(f"context[{i}] is {json_type(entry)}, expected [title, [sentence, ...]]")
        title, sentences = entry
        if not isinstance(title, str):
            raise fail(f"context[{i}] title is {json_type(title)}, expected a string")
        if not isinstance(sentences, list):
            raise fail(f"paragraph {title!r} sentences are {json_type(sentences)}, expected a list")
        if not sentences:
            raise fail(f"paragraph {title!r} has no sentences")
        for j, sent in enumerate(sentences):
            if not isinstance(sent, str):
                raise fail(
                    f"paragraph {title!r} sentence {j} is {json_type(sent)}, expected a string"
                )
        paragraphs.append(Paragraph(title, tuple(sentences)))
    return tuple(paragraphs)


def _parse_supporting_facts(
    entries: list[Any], context: tuple[Paragraph, ...], fail
) -> tuple[SupportingFact, ...]:
    # A title may repeat in a context (the official data has a few duplicated paragraphs), so a
    # fact is in range if any paragraph with that title is long enough.
    lengths: dict[str, int] = {}
    for para in context:
        lengths[para.title] = max(lengths.get(para.title, 0), len(para.sentences))
    facts = []
    for i, entry in enumerate(entries):
        ok = (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and isinstance(entry[1], int)
            and not isinstance(entry[1], bool)
        )
        if not ok:
            raise fail(f"supporting_facts[{i}] is {entry!r}, expected [title, sentence index]")
        title, sent_id = entry
        if title not in lengths:
            raise fail(f"supporting fact {entry!r} names paragraph {title!r}, not in the context")
        if not 0 <= sent_id < lengths[title]:
            raise fail(
                f"supporting fact {entry!r} points at sentence {sent_id} but paragraph {title!r} "
                f"has {lengths[title]} sentences"
            )
        facts.append(SupportingFact(title, sent_id))
    return tuple(facts)


def _parse_evidences(entries: Any, fail) -> tuple[tuple[str, str, str], ...]:
    if not isinstance(entries, list):
        raise fail(f"field 'evidences' is {json_type(entries)}, expected a list")
    out = []
    for i, entry in enumerate(entries):
        if not (
            isinstance(entry, list) and len(entry) == 3 and all(isinstance(x, str) for x in entry)
        ):
            raise fail(f"evidences[{i}] is {entry!r}, expected [subject, relation, object]")
        out.append((entry[0], entry[1], entry[2]))
    return tuple(out)


def _parse_aliases(entries: Any, answer: str, fail) -> tuple[str, ...]:
    if not isinstance(entries, list):
        raise fail(f"field 'answer_aliases' is {json_type(entries)}, expected a list")
    out: list[str] = []
    for i, alias in enumerate(entries):
        if not isinstance(alias, str) or not alias.strip():
            raise fail(f"answer_aliases[{i}] is {alias!r}, expected a non-empty string")
        # The answer itself and repeats add nothing to `gold_answers`.
        if alias != answer and alias not in out:
            out.append(alias)
    return tuple(out)


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


def _check_disjoint(
    train: list[Example], dev: list[Example], train_src: str, dev_src: str, id_name: str
) -> None:
    # A question in both files would leak evaluation data into training.
    train_ids = {ex.id for ex in train}
    for ex in dev:
        if ex.id in train_ids:
            raise DataError(dev_src, f"{id_name} also appears in the train file {train_src}", ex.id)


def _columns_to_rows(value: Any, keys: tuple[str, str], name: str, source: str, label: str) -> Any:
    """Hub column form {"title": [...], "sent_id": [...]} -> official rows [[title, sent_id], ...].
    Anything else is passed through for `parse_record` to judge."""
    if not isinstance(value, Mapping):
        return value
    missing = [k for k in keys if k not in value]
    if missing:
        raise DataError(source, f"field '{name}' has no '{missing[0]}' column", label)
    left, right = (value[k] for k in keys)
    if not isinstance(left, (list, tuple)) or not isinstance(right, (list, tuple)):
        raise DataError(source, f"field '{name}' columns are not lists", label)
    if len(left) != len(right):
        raise DataError(
            source, f"field '{name}' columns '{keys[0]}' and '{keys[1]}' differ in length", label
        )
    # Lists, not tuples: the official shape `parse_record` checks uses JSON lists.
    return [
        [a, list(b) if isinstance(b, Sequence) and not isinstance(b, str) else b]
        for a, b in zip(left, right, strict=True)
    ]


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
