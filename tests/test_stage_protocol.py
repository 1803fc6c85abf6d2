"""The artifact protocol every cached stage follows (lmgcot.pipeline.stage), the config view that
keeps a stage from reading what its fingerprint does not cover, and results.json's provenance."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError

from lmgcot.artifacts import STAGE_ORDER, RunDir, StageDir
from lmgcot.errors import ConfigError
from lmgcot.pipeline import run
from lmgcot.pipeline.fingerprints import fingerprint
from lmgcot.pipeline.stage import Stage, run_stage
from lmgcot.pipeline.stages import STAGES
from lmgcot.utils.io import read_json


def _cfg(tmp_path, **over):
    base = {
        "seed": 0,
        "force": False,
        "share_artifacts": True,
        "paths": {"artifact_dir": str(tmp_path / "store")},
        "rl": {"rollouts": 3, "lr": 0.1},
        "trainer": {"max_steps": 5, "enable_progress_bar": True},
    }
    return OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(over))


def _ctx(tmp_path, cfg):
    return SimpleNamespace(cfg=cfg, run=RunDir(tmp_path / "run"))


def _counting_stage(calls: list, reads=("rl", "trainer"), body_reads=("rl.rollouts",)):
    def body(ctx, cfg, out: StageDir) -> dict:
        calls.append(1)
        values = {key: OmegaConf.select(cfg, key, throw_on_missing=True) for key in body_reads}
        for key in body_reads:  # attribute access, as stage code reads the config
            node = cfg
            for part in key.split("."):
                node = getattr(node, part)
        (out / "artifact.txt").write_text(str(values))
        return {"values": values}

    return Stage("distill", reads=reads, body=body)


@pytest.mark.unit
def test_a_stage_that_reads_an_undeclared_key_fails(tmp_path):
    calls: list = []
    stage = _counting_stage(calls, reads=("trainer",), body_reads=("rl.rollouts",))
    ctx = _ctx(tmp_path, _cfg(tmp_path))
    with pytest.raises(ConfigAttributeError):
        run_stage(stage, ctx, ctx.run.distill)
    assert not ctx.run.distill.done


@pytest.mark.unit
def test_reuse_redo_and_transport_keys(tmp_path):
    calls: list = []
    stage = _counting_stage(calls)
    ctx = _ctx(tmp_path, _cfg(tmp_path))
    out = ctx.run.distill
    assert run_stage(stage, ctx, out) == {"values": {"rl.rollouts": 3}}
    assert out.done and out.summary() == {"values": {"rl.rollouts": 3}} and len(calls) == 1
    # Same config: reused, the body is not called again.
    assert run_stage(stage, ctx, out) == {"values": {"rl.rollouts": 3}} and len(calls) == 1
    # A transport-only key changes nothing that the stage makes: still reused.
    ctx.cfg.trainer.enable_progress_bar = False
    run_stage(stage, ctx, out)
    assert len(calls) == 1
    # A key the stage reads: redone, and its stale checkpoints dropped first.
    out.checkpoints.mkdir(parents=True)
    (out.checkpoints / "last.ckpt").write_text("another config's state")
    ctx.cfg.rl.rollouts = 4
    assert run_stage(stage, ctx, out) == {"values": {"rl.rollouts": 4}} and len(calls) == 2
    assert not (out.checkpoints / "last.ckpt").exists()
    # force=true redoes a finished stage from the start: not from its finished run's checkpoint.
    (out.checkpoints / "last.ckpt").write_text("the finished run's end")
    ctx.cfg.force = True
    run_stage(stage, ctx, out)
    assert len(calls) == 3 and not (out.checkpoints / "last.ckpt").exists()
    # ... but a forced run that was interrupted resumes (its meta says not done).
    out.write_meta({"fingerprint": out.fingerprint, "done": False})
    (out.checkpoints / "last.ckpt").write_text("the interrupted forced run's state")
    run_stage(stage, ctx, out)
    assert len(calls) == 4 and (out.checkpoints / "last.ckpt").exists()


@pytest.mark.unit
def test_a_finished_artifact_is_shared_between_runs(tmp_path):
    calls: list = []
    stage = _counting_stage(calls)
    first = SimpleNamespace(cfg=_cfg(tmp_path), run=RunDir(tmp_path / "a"))
    second = SimpleNamespace(cfg=_cfg(tmp_path), run=RunDir(tmp_path / "b"))
    run_stage(stage, first, first.run.distill)
    run_stage(stage, second, second.run.distill)
    assert len(calls) == 1 and second.run.distill.done
    assert (second.run.distill / "artifact.txt").read_text() == "{'rl.rollouts': 3}"


@pytest.mark.unit
def test_a_stage_without_its_declared_artifact_is_not_marked_done(tmp_path):
    calls: list = []
    stage = _counting_stage(calls)
    stage = Stage("distill", reads=stage.reads, body=stage.body, artifacts=("student",))
    ctx = _ctx(tmp_path, _cfg(tmp_path))
    with pytest.raises(RuntimeError, match=r"without its artifacts \['student'\]"):
        run_stage(stage, ctx, ctx.run.distill)
    assert not ctx.run.distill.done


@pytest.mark.unit
def test_a_stage_needing_another_says_which(tmp_path):
    ctx = _ctx(tmp_path, _cfg(tmp_path))
    stage = Stage("refine", reads=("rl",), body=lambda *a: {}, needs=lambda cfg: ("distill",))
    with pytest.raises(ConfigError, match="refine needs a distilled student in .*distill"):
        run_stage(stage, ctx, ctx.run.refine)


@pytest.mark.unit
def test_every_stage_reads_only_config_its_fingerprint_holds():
    """The stages' declared reads: the shared stages' fingerprints cover what their artifacts
    depend on, and each later stage's covers the earlier ones' (its inputs are their artifacts)."""
    teacher, distill, refine = (set(STAGES[s].reads) for s in ("teacher", "distill", "refine"))
    assert teacher <= distill <= refine
    assert {"rl", "reward", "evaluation.answer_max_new_tokens"} <= refine
    assert not STAGES["evaluate"].cached
    # The config checks order stages by the run directory's list: the same as the registry's.
    assert tuple(STAGES) == STAGE_ORDER


@pytest.mark.unit
def test_the_test_split_cap_is_no_part_of_the_training_stages(compose_cfg):
    """A run that evaluates on fewer test questions (experiment=quick) takes the teacher, the
    student and the refined student of the full run; fingerprints stored before the cap was
    ignored stay valid; the val cap, which training does see, still counts."""
    full, capped = compose_cfg(), compose_cfg("dataset.max_test=7")
    fewer_val = compose_cfg("dataset.max_val=7")
    for name in ("teacher", "distill", "refine"):
        stage = STAGES[name]
        assert stage.fingerprint(capped) == stage.fingerprint(full), name
        assert stage.fingerprint(full) == fingerprint(full, stage.reads), name  # as stored before
        assert stage.view(capped).dataset.max_test is None, name
    for name in ("distill", "refine"):
        assert STAGES[name].fingerprint(fewer_val) != STAGES[name].fingerprint(full), name
    assert STAGES["evaluate"].view(capped).dataset.max_test == 7


@pytest.mark.stage
@pytest.mark.slow
def test_results_keep_only_rows_made_under_this_config(compose_cfg, tmp_path):
    """A re-evaluation merges earlier rows of results.json only where they come from the same
    configuration; each row's fingerprint is recorded."""
    common = ["stages=[evaluate]", "evaluation.rationale_quality=false"]
    first = run(compose_cfg(*common, "evaluation.methods=[standard,cot]"))
    prov = first["provenance"]["methods"]
    assert set(prov) == {"standard", "cot"} and prov["standard"] != prov["cot"]
    assert "torch" in first["versions"]
    # Same settings, another method: the earlier rows stay.
    second = run(compose_cfg(*common, "evaluation.methods=[standard]"))
    assert set(second["methods"]) == {"standard", "cot"}
    # cot's own setting changed: its earlier row no longer describes this configuration.
    third = run(
        compose_cfg(*common, "evaluation.methods=[standard]", "evaluation.cot_max_new_tokens=64")
    )
    assert set(third["methods"]) == {"standard"}
    on_disk = read_json(tmp_path / "run" / "results.json")
    assert set(on_disk["provenance"]["methods"]) == {"standard"}
