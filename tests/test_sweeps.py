"""The sweep files (sweeps/, run as `lmgcot -m +sweep=NAME`): each composes and one job of it runs on
the offline default; a real multirun shares its teacher and student and groups its W&B runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST, SMALL_SYNTHETIC, TINY_STUDENT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from test_cli import QUICK, lmgcot

from lmgcot.cli import CONFIG_DIR
from lmgcot.pipeline import run

SWEEPS_DIR = Path(CONFIG_DIR).parent / "sweeps"
SWEEPS = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
# What stands in, offline, for the pieces a sweep sets that need weights, data files or a key.
OFFLINE = ["dataset=synthetic", "large_lm=simulated", "student=tiny", "trainer=default"]


def _compose(overrides: list[str], hydra_config: bool = False):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("config", overrides=overrides, return_hydra_config=hydra_config)
    finally:
        GlobalHydra.instance().clear()


def _first_job(params: dict) -> list[str]:
    """The overrides of a sweep's first job (glob(*) over rewards: the task reward)."""
    out = []
    for key, values in params.items():
        first = "task" if str(values).startswith("glob(") else str(values).split(",")[0].strip()
        out.append(f"{key}={first}")
    return out


def test_the_expected_sweeps_ship():
    assert {
        "reward_mix",
        "student_size",
        "self_consistency",
        "teacher_samples",
        "backend",
        "paper_hotpotqa",
        "paper_2wiki",
    } <= set(SWEEPS)


@pytest.mark.parametrize("name", SWEEPS)
def test_each_sweep_composes_and_one_of_its_jobs_runs(name, tmp_path):
    cfg = _compose([f"+sweep={name}"], hydra_config=True)
    assert cfg.sweep_name == name
    params = dict(cfg.hydra.sweeper.params)
    assert params and "seed" in params
    job = _first_job(params)
    offline = OFFLINE if name.startswith("paper_") else []
    small = [o for o in TINY_STUDENT if not name == "student_size"]
    cfg = _compose(
        [
            f"+sweep={name}",
            *offline,
            *job,
            f"paths.output_dir={tmp_path / 'outputs'}",
            f"paths.run_dir={tmp_path / 'run'}",
            *small,
            *FAST,
            *SMALL_SYNTHETIC,
            "trainer.accelerator=cpu",
            "trainer.precision=32-true",
        ]
    )
    results = run(cfg)
    assert (tmp_path / "run" / "results.json").exists()
    assert {"lm_guided_kd", "lm_guided_rl"} <= set(results["methods"])


def test_the_paper_sweeps_set_the_papers_setting():
    for name, dataset in (("paper_hotpotqa", "hotpotqa"), ("paper_2wiki", "2wiki")):
        cfg = _compose([f"+sweep={name}"])
        assert cfg.dataset._target_.endswith(("HotpotQA", "TwoWiki"))
        assert dataset in cfg.dataset._target_.lower().replace("twowiki", "2wiki")
        assert cfg.student.pretrained.startswith("google/flan-t5")
        assert cfg.large_lm.model == "google/flan-t5-xxl"


def test_a_sweep_multirun_shares_its_teacher_and_student_and_groups_wandb(tmp_path):
    proc = lmgcot(
        tmp_path,
        "-m",
        "+sweep=reward_mix",
        "reward=task,rationale",
        "seed=0",
        *QUICK,
        "logger=wandb",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [sweep_dir] = (tmp_path / "outputs" / "multirun" / "reward_mix").glob("*/*")
    results = [json.loads((sweep_dir / j / "results.json").read_text()) for j in ("0", "1")]
    # The second job took the first one's teacher rationales and distilled student.
    assert "teacher" not in results[1]["llm"]["by_stage"]
    assert results[1]["distill"] == results[0]["distill"]
    assert results[0]["refine"]["reward"] != results[1]["refine"]["reward"]
    for job in ("0", "1"):
        [wandb_file] = (sweep_dir / job / "wandb").glob("offline-run-*/run-*.wandb")
        assert b"reward_mix" in wandb_file.read_bytes()  # the W&B group
