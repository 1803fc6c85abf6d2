"""Distillation under Lightning's DDP (`trainer=ddp`) with two CPU processes, each on its own share
of the length-grouped batches."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import TINY_STUDENT
from test_cli import lmgcot

from lmgcot.distill.datamodule import LengthGroupedBatchSampler


@pytest.mark.unit
def test_each_process_gets_its_own_equal_share_of_the_batches():
    lengths = [(i * 7) % 23 for i in range(103)]
    whole = list(LengthGroupedBatchSampler(lengths, 4, seed=3))
    shares = [list(LengthGroupedBatchSampler(lengths, 4, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == len(whole) // 2
    seen = [i for share in shares for batch in share for i in batch]
    assert len(seen) == len(set(seen))  # no example twice in an epoch
    assert {tuple(b) for s in shares for b in s} <= {tuple(b) for b in whole}


@pytest.mark.e2e
@pytest.mark.slow
def test_ddp_with_two_cpu_processes_trains_the_student(tmp_path):
    run_dir = tmp_path / "run"
    proc = lmgcot(
        tmp_path,
        "stages=[teacher,distill]",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "trainer.max_steps=30",
        "trainer.max_epochs=30",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "dataset.n_train=64",
        # One rationale per question keeps the epoch arithmetic below simple.
        "teacher.num_samples=1",
        "dataset.n_val=8",
        "dataset.n_test=8",
        "distill.batch_size=8",
        "distill.optimizer.lr=3e-3",
        "distill.scheduler.num_warmup_steps=0",
        *TINY_STUDENT,
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "distill" / "summary.json").read_text())
    assert summary["steps"] == 30
    # Two processes of 4 batches each per epoch: 30 steps take 8 epochs (one process: 4).
    assert summary["epochs"] >= 6
    losses = [
        float(row["train/loss"])
        for path in sorted((run_dir / "csv").glob("version_*/metrics.csv"))
        for row in csv.DictReader(path.open())
        if row.get("train/loss")
    ]
    assert len(losses) >= 20
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5
    assert (run_dir / "distill" / "student").is_dir()
