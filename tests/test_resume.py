"""A run killed mid-training resumes from its checkpoint and loses no finished stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import forkserver
import pytest
from conftest import TINY_STUDENT

from lmgcot.eval.methods import PAPER_METHODS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
# Bounds a hang only: on a machine shared with other jobs a run can take several minutes.
HANG_S = 900


def kill_after_checkpoint(args: list[str], checkpoint: Path) -> None:
    """Start the command, and SIGKILL it as soon as `checkpoint` appears, while it trains on.

    Checkpoints are published by a rename (`lmgcot.utils.checkpoints`), so the file is whole the
    moment it exists; no pause is needed for it to be written. The deadline only bounds a hang.
    """
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + HANG_S
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the process dies without warning
    proc.wait()


def test_killed_run_resumes_in_the_same_run_directory(tmp_path: Path):
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "lmgcot.cli",
        f"hydra.run.dir={run_dir}",
        f"paths.output_dir={tmp_path / 'outputs'}",
        "dataset.n_train=64",
        "dataset.n_val=8",
        "dataset.n_test=8",
        "distill.batch_size=4",
        "trainer.max_epochs=1000",
        "trainer.max_steps=300",
        "trainer.enable_progress_bar=false",
        "evaluation.self_consistency.k=2",
        "rl.rollouts=2",
        "rl.rollout_batch_size=8",
        *TINY_STUDENT,
    ]
    last = run_dir / "distill" / "checkpoints" / "last.ckpt"
    kill_after_checkpoint(args, last)
    assert last.exists(), "no checkpoint was written before the kill"
    assert not (run_dir / "results.json").exists()
    teacher_rows = (run_dir / "teacher" / "train.jsonl").read_text()

    # The same command again: it finds the run directory and carries on.
    done = forkserver.run(args[:3], args[3:], Path.cwd(), ENV, HANG_S)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert (run_dir / "teacher" / "train.jsonl").read_text() == teacher_rows
    assert "teacher" not in results["llm"]["by_stage"]  # reused, not regenerated
    assert "resumed from" in (run_dir / "lmgcot.log").read_text()
    assert results["distill"]["steps"] == 300
    assert set(results["methods"]) == set(PAPER_METHODS)


def test_killed_refine_stage_resumes_from_its_step_with_the_kl_state(tmp_path: Path):
    import csv

    import torch

    run_dir = tmp_path / "run"
    rollouts = 40
    args = [
        sys.executable,
        "-m",
        "lmgcot.cli",
        f"hydra.run.dir={run_dir}",
        f"paths.output_dir={tmp_path / 'outputs'}",
        "dataset.n_train=32",
        "dataset.n_val=4",
        "dataset.n_test=4",
        "distill.batch_size=4",
        "trainer.max_steps=4",
        "trainer.enable_progress_bar=false",
        "evaluation.self_consistency.k=2",
        f"rl.rollouts={rollouts}",
        "reward=task",  # what resumes is the optimiser and KL state, whatever the reward
        "teacher.num_samples=1",
        "rl.rollout_batch_size=4",
        "rl.samples_per_question=2",
        "rl.minibatch_size=4",
        "rl.ppo_epochs=1",
        "rl.val_every=5",
        "rl.max_val_questions=4",
        # An adaptive coefficient far from its target moves at every rollout: its value tells
        # whether the resumed run carried on from the saved state or started again.
        "rl.kl.controller=adaptive",
        "rl.kl.coef=0.05",
        "rl.kl.target=100",
        "rl.kl.horizon=20",
        *TINY_STUDENT,
    ]
    last = run_dir / "refine" / "checkpoints" / "last.ckpt"
    kill_after_checkpoint(args, last)
    assert last.exists(), "no refine checkpoint was written before the kill"
    assert not (run_dir / "refine" / "summary.json").exists(), "refine finished before the kill"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    saved_step, saved_coef = saved["global_step"], saved["kl_controller"]["value"]
    assert 0 < saved["rollouts_done"] < rollouts and saved_coef < 0.05

    done = forkserver.run(args[:3], args[3:], Path.cwd(), ENV, HANG_S)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refine: resumed from" in (run_dir / "lmgcot.log").read_text()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["refine"]["rollouts"] == rollouts
    assert results["refine"]["optimizer_steps"] == rollouts  # one optimiser step per rollout
    # The resumed invocation logs to a new CSV version: its first rollout is the one after the
    # saved step, penalised with the saved coefficient.
    versions = sorted((run_dir / "csv").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    with open(versions[-1] / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("rl/kl_coef")]
    assert int(rows[0]["step"]) >= saved_step
    assert float(rows[0]["rl/kl_coef"]) == pytest.approx(saved_coef, rel=1e-6)
    assert len(rows) == rollouts - saved["rollouts_done"]
