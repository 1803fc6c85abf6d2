"""Runs share finished stages through the artifact store (paths.artifact_dir) and one call cache:
a sweep pays for the teacher and the distillation once, also when its jobs run at the same time."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
from test_cli import QUICK, _start

from lmgcot.pipeline import run


@pytest.mark.stage
@pytest.mark.slow
def test_a_run_with_another_reward_reuses_teacher_and_distill_from_the_store(
    compose_cfg, tmp_path, caplog
):
    caplog.set_level("INFO", logger="lmgcot")
    first = run(compose_cfg("reward=task", run_dir=tmp_path / "a"))
    caplog.clear()
    second = run(compose_cfg("reward=rationale", run_dir=tmp_path / "b"))
    log = caplog.text
    assert "teacher: reusing the shared artifact" in log
    assert "distill: reusing the shared artifact" in log
    assert "refine: reusing the shared artifact" not in log  # another reward: trained afresh
    assert "teacher" not in second["llm"]["by_stage"]  # not one call, not even a cache hit
    assert second["distill"] == first["distill"]
    assert second["methods"]["lm_guided_kd"] == first["methods"]["lm_guided_kd"]
    # The student's weights are one file on disk, hard-linked into both runs and the store.
    weights = [
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "distill" / "student").iterdir()
    ]
    assert weights
    for rel in weights:
        assert os.stat(tmp_path / "a" / rel).st_ino == os.stat(tmp_path / "b" / rel).st_ino
    stored = list((tmp_path / "outputs" / "artifacts" / "distill").iterdir())
    [entry] = [p for p in stored if p.is_dir()]
    # The store keeps the exported student, not the run's own resumable checkpoints.
    assert (entry / "student" / "config.json").exists()
    assert not (entry / "checkpoints").exists()
    # Evaluation settings are not part of the refine fingerprint: a third run reuses all three.
    caplog.clear()
    third = run(
        compose_cfg("reward=rationale", "evaluation.self_consistency.k=3", run_dir=tmp_path / "c")
    )
    assert "refine: reusing the shared artifact" in caplog.text
    assert third["refine"] == second["refine"]


@pytest.mark.stage
@pytest.mark.slow
def test_share_artifacts_false_recomputes(compose_cfg, tmp_path, caplog):
    caplog.set_level("INFO", logger="lmgcot")
    run(compose_cfg(run_dir=tmp_path / "a"))
    caplog.clear()
    again = run(compose_cfg("share_artifacts=false", run_dir=tmp_path / "b"))
    assert "reusing the shared artifact" not in caplog.text
    assert again["llm"]["by_stage"]["teacher"]["cache_hits"] > 0


@pytest.mark.e2e
@pytest.mark.slow
def test_two_jobs_started_together_pay_for_the_teacher_once(tmp_path):
    root = tmp_path / "root"
    procs = [
        _start(
            root,
            *QUICK,
            "large_lm.batch_size=4",  # many small cache commits: interleaving is likely
            f"evaluation.self_consistency.k={k}",
            f"hydra.run.dir={root / f'job{k}'}",
        )
        for k in (2, 3)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    results = [json.loads((root / f"job{k}" / "results.json").read_text()) for k in (2, 3)]
    teacher = [r["llm"]["by_stage"].get("teacher", {}).get("calls", 0) for r in results]
    # One call per rationale sample: the synthetic/tiny schedule asks for several per question.
    n_prompts = sum(results[0]["teacher"][split]["rationales"] for split in ("train", "val"))
    # One job wrote the rationales; the other waited for them and took the stored artifact.
    assert sorted(teacher) == [0, n_prompts]
    assert results[0]["distill"] == results[1]["distill"]
    cache = root / "outputs" / "cache" / "llm_calls.sqlite"
    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    assert rows == sum(r["llm"]["calls"] for r in results)  # no call was paid twice
