"""The official HotpotQA-style record format shared by hotpotqa and 2wiki: one record (from a local
file, or rewritten from an HF-hub record) -> a validated `Example`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmgcot.data.example import Example, Paragraph, SupportingFact
from lmgcot.data.records import check_unique_ids, json_type, load_json_list, typed_field
from lmgcot.errors import DataError

REQUIRED_FIELDS = ("_id", "question", "answer", "type", "supporting_facts", "context")


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
