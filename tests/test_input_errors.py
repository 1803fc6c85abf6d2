"""In process, in milliseconds: what the loaders accept (a BOM) and refuse (a one-choice question,
JSON nested past the recursion limit), and how the CLI turns an error into its one line."""

from __future__ import annotations

import errno
import json

import pytest
from hydra.errors import (
    ConfigCompositionException,
    MissingConfigException,
    OverrideParseException,
)
from test_data_official import good_record
from test_data_reasoning_official import commonsenseqa_record, gsm8k_record

from lmgcot.cli import describe
from lmgcot.data.commonsenseqa_format import read_commonsenseqa
from lmgcot.data.gsm8k_format import read_gsm8k
from lmgcot.data.hotpot_format import read_examples
from lmgcot.errors import DataError
from lmgcot.utils.io import atomic_write_text, with_filename

pytestmark = pytest.mark.unit

BOM = "\ufeff"


def test_a_json_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "h.json"
    path.write_text(BOM + json.dumps([good_record("a"), good_record("b")]), encoding="utf-8")
    assert [ex.id for ex in read_examples(path)] == ["a", "b"]


def test_a_jsonl_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "g.jsonl"
    lines = [json.dumps(gsm8k_record(i)) for i in range(3)]
    path.write_text(BOM + "\n".join(lines) + "\n", encoding="utf-8")
    assert len(read_gsm8k(path)) == 3


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_a_commonsenseqa_question_needs_five_choices(tmp_path, n):
    record = commonsenseqa_record(0)
    choices = record["question"]["choices"]
    record["question"]["choices"] = (choices + [{"label": "F", "text": "f"}])[:n]
    record["answerKey"] = "A"
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"record line 1: question.choices has {n} of the 5"):
        read_commonsenseqa(path)


def test_json_nested_past_the_recursion_limit_is_a_data_error(tmp_path):
    path = tmp_path / "h.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(DataError, match="nested too deeply"):
        read_examples(path)


def test_a_failed_write_names_its_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", full)
    with pytest.raises(OSError) as caught:
        atomic_write_text(tmp_path / "results.json", "{}")
    assert caught.value.filename == str(tmp_path / "results.json")
    assert caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
    named = OSError(errno.EACCES, "Permission denied", "/x")
    assert with_filename(named, "/y") is named


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/o/best.ckpt"),
            "/o/best.ckpt: No space",
        ),
        (
            OSError(errno.EROFS, "Read-only file system", "/ro"),
            "/ro: Read-only file system: point paths.output_dir",
        ),
        (OSError(errno.ENOENT, "No such file or directory", "/n"), "/n: No such file"),
        (RecursionError("maximum recursion depth"), "nested too deeply"),
        (
            MissingConfigException("Could not find 'dataset/x'", "dataset/x", ["a", "b"]),
            "Could not find 'dataset/x'; Available options in 'dataset': a, b",
        ),
        (OverrideParseException("a=[", "no viable alternative"), "a=[: bad override syntax"),
        (
            ConfigCompositionException(
                "Could not override 'studnet'.\nTo append to your config use +studnet=tiny"
            ),
            "Could not override 'studnet'; did you mean the group 'student'?",
        ),
    ],
)
def test_describe_gives_one_line(err, expected):
    line = describe(err)
    assert expected in line
    assert "\n" not in line
