"""Loggers: CSV metrics always; W&B offline into the run directory, finished after every run."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from lmgcot.pipeline import run

pytestmark = [pytest.mark.stage, pytest.mark.slow]

# Training logs train/loss; `standard` alone keeps evaluation to large-LM calls (no student decoding)
# while still logging the final test metrics.
QUICK = ["evaluation.methods=[standard]"]


@pytest.fixture
def no_wandb_credentials(monkeypatch, tmp_path):
    """No key, no mode from the environment, no netrc or settings of the developer's own: the
    config alone must keep W&B offline. The working directory is a fresh, separate folder."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def _metric_columns(run_dir: Path) -> tuple[list[Path], set[str]]:
    files = sorted(run_dir.glob("csv/*/metrics.csv"))
    columns: set[str] = set()
    rows = 0
    for f in files:
        with f.open(newline="") as fh:
            reader = csv.DictReader(fh)
            columns |= set(reader.fieldnames or ())
            rows += sum(1 for _ in reader)
    assert rows > 0, f"no metric rows in {files}"
    return files, columns


def _offline_run(run_dir: Path) -> Path:
    """The one W&B offline run folder under run_dir/wandb."""
    runs = sorted(p for p in (run_dir / "wandb").glob("offline-run-*") if p.is_dir())
    assert len(runs) == 1, f"expected one offline-run-* folder in {run_dir / 'wandb'}: {runs}"
    return runs[0]


def _records(offline_run: Path, *needles: bytes, timeout_s: float = 120.0) -> bytes:
    """The run's transaction log, once it holds `needles` (or the timeout passed).

    wandb.finish() can return before the wandb-core service has written the offline run's records
    in-process (seen with wandb 0.31: the file is its 7-byte header for a moment)."""
    deadline = time.monotonic() + timeout_s
    while True:
        files = sorted(offline_run.glob("run-*.wandb"))
        data = files[0].read_bytes() if files else b""
        if all(n in data for n in needles) or time.monotonic() > deadline:
            return data
        time.sleep(0.1)


def test_csv_logger_writes_train_loss_in_the_run_directory(compose_cfg, tmp_path):
    run(compose_cfg(*QUICK))
    files, columns = _metric_columns(tmp_path / "run")
    assert len(files) == 1
    assert {"train/loss", "step"} <= columns
    assert "test/standard/em" in columns
    # The refine stage's diagnostics and every reward component with its spread, per rollout
    # (the default estimator is critic-free: no value loss).
    rl_keys = {"kl", "kl_coef", "entropy", "clipfrac", "approx_kl", "policy_loss", "adv_score_corr"}
    assert {f"rl/{k}" for k in rl_keys} | {"rl/response_length", "val/reward"} <= columns
    assert "rl/value_loss" not in columns
    assert {"rewards/task/mean", "rewards/total/mean", "rewards/task/spread"} <= columns
    samples = [
        json.loads(line)
        for line in (tmp_path / "run" / "refine" / "rollout_samples.jsonl").read_text().splitlines()
    ]
    assert samples and {"rollout", "input", "rationale", "task", "total"} <= set(samples[0])
    assert not (tmp_path / "run" / "wandb").exists()


def test_wandb_logs_offline_into_the_run_directory_and_finishes(
    compose_cfg, tmp_path, no_wandb_credentials
):
    import wandb

    run(compose_cfg("logger=wandb", *QUICK))
    assert wandb.run is None, "wandb.finish() was not called"
    run_dir = tmp_path / "run"
    # Offline by the config alone: W&B names an offline run's folder offline-run-*, an online
    # one's run-* (and with no key an online init fails at once).
    offline = _offline_run(run_dir)
    assert not list((run_dir / "wandb").glob("run-*"))
    records = _records(offline, b"train/loss", b"test/standard/em", b"rl/samples")
    assert b"train/loss" in records and b"test/standard/em" in records
    assert b"rl/kl" in records and b"rl/samples" in records  # the sample-rationale table
    _, columns = _metric_columns(run_dir)
    assert "train/loss" in columns
    # results.json goes with the run, and the config it logged is the resolved one.
    saved = offline / "files" / "results.json"
    assert json.loads(saved.read_text()) == json.loads((run_dir / "results.json").read_text())
    # Nothing in the working directory (Lightning's WandbLogger defaults to save_dir=".").
    assert list(no_wandb_credentials.iterdir()) == []


def test_two_runs_in_one_process_get_two_wandb_runs(compose_cfg, tmp_path, no_wandb_credentials):
    import wandb

    # Like two jobs of a Hydra multirun: same process, separate run directories (each trains: the
    # second does not take the first one's student from the store).
    first, second = tmp_path / "job0", tmp_path / "job1"
    run(compose_cfg("logger=wandb", *QUICK, "share_artifacts=false", run_dir=first))
    assert wandb.run is None
    run(compose_cfg("logger=wandb", *QUICK, "share_artifacts=false", run_dir=second))
    assert wandb.run is None
    a = _offline_run(first)
    b = _offline_run(second)
    run_id = a.name.rsplit("-", 1)[-1]
    assert run_id != b.name.rsplit("-", 1)[-1]
    # The second job's metrics went to its own run, not appended to the first one's file.
    assert run_id.encode() in _records(a, run_id.encode())
    records = _records(b, b"train/loss")
    assert b"train/loss" in records
    assert run_id.encode() not in records
