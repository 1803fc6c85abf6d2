"""Artifacts read like any file the user writes (their umask), and a checkpoint is written whole or
not at all: a failed write leaves nothing where resume would look."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import torch

from lmgcot.artifacts import StageDir
from lmgcot.pipeline.builders import build_trainer
from lmgcot.utils.checkpoints import AtomicCheckpointIO
from lmgcot.utils.io import atomic_write_text, replace_dir, write_json, write_jsonl

pytestmark = pytest.mark.unit


@pytest.fixture
def umask():
    """umask(value): set the process umask for this test only."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    atomic_write_text(tmp_path / "a.txt", "x")
    write_json(tmp_path / "results.json", {"a": 1})
    write_jsonl(tmp_path / "eval" / "m.jsonl", [{"a": 1}])
    for name in ("a.txt", "results.json", "eval/m.jsonl"):
        assert _mode(tmp_path / name) == expected, name
    assert not list(tmp_path.rglob("*.tmp"))


def test_replace_dir_gives_an_exported_model_the_umask(tmp_path, umask):
    umask(0o022)
    tmp = tmp_path / "student.tmp"
    (tmp / "sub").mkdir(parents=True)
    weights = tmp / "model.safetensors"
    weights.write_bytes(b"w")
    os.chmod(weights, 0o600)  # what transformers' save_pretrained leaves
    os.chmod(tmp / "sub", 0o700)
    final = replace_dir(tmp, tmp_path / "student")
    assert _mode(final / "model.safetensors") == 0o644
    assert _mode(final / "sub") == 0o755
    assert _mode(final) == 0o755


def test_a_checkpoint_is_written_with_the_umask(tmp_path, umask):
    umask(0o022)
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, tmp_path / "ckpt" / "last.ckpt")
    assert _mode(tmp_path / "ckpt" / "last.ckpt") == 0o644
    loaded = AtomicCheckpointIO().load_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    assert torch.equal(loaded["w"], torch.ones(2))


def _disk_full_after_some_bytes(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("name", ["best.ckpt", "last.ckpt"])
def test_a_failed_checkpoint_write_leaves_no_half_file(tmp_path, monkeypatch, name):
    monkeypatch.setattr(torch, "save", _disk_full_after_some_bytes)
    with pytest.raises(OSError, match="No space left"):
        AtomicCheckpointIO().save_checkpoint({"w": 1}, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
    monkeypatch.setattr(torch, "save", _disk_full_after_some_bytes)
    with pytest.raises(OSError):
        io.save_checkpoint({"step": 2}, tmp_path / "last.ckpt")
    monkeypatch.undo()
    assert io.load_checkpoint(tmp_path / "last.ckpt") == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_the_trainer_saves_through_the_atomic_writer(compose_cfg, tmp_path):
    cfg = compose_cfg()
    trainer, _ = build_trainer(cfg.trainer, StageDir(tmp_path / "distill"), [], None, "min")
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_a_run_counted_in_steps_shows_no_negative_epoch_total(compose_cfg, tmp_path):
    from pytorch_lightning.callbacks import TQDMProgressBar
    from pytorch_lightning.utilities.imports import _RICH_AVAILABLE

    from lmgcot.utils.progress import StepsProgressBar

    cfg = compose_cfg("trainer.enable_progress_bar=true")
    out = StageDir(tmp_path / "refine")
    trainer, _ = build_trainer(cfg.trainer, out, [], None, "max", max_epochs=-1, max_steps=4)
    bar = trainer.progress_bar_callback
    if not _RICH_AVAILABLE:
        # tqdm's bar prints no epoch total, so there is nothing to fix.
        assert type(bar) is TQDMProgressBar
        return
    assert isinstance(bar, StepsProgressBar)
    bar._trainer = trainer  # what Lightning sets when fitting starts
    assert bar._get_train_description(0).strip() == "Epoch 0"
    trainer, _ = build_trainer(cfg.trainer, out, [], None, "max", max_epochs=3)
    trainer.progress_bar_callback._trainer = trainer
    assert trainer.progress_bar_callback._get_train_description(0).strip() == "Epoch 0/2"


def test_http_request_lines_stay_out_of_the_log():
    import logging

    import lmgcot.cli  # noqa: F401  (sets the levels)

    for name in ("httpx", "anthropic", "openai"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)
