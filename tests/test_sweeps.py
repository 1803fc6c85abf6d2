"""The sweep files (sweeps/, run as `lmgcot -m +sweep=NAME`): each composes and one job of it runs on
the offline default; a real multirun shares its teacher and student and groups its W&B runs."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import FAST, SMALL_SYNTHETIC, TINY_STUDENT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from test_cli import QUICK, _env, lmgcot

from lmgcot.cli import CONFIG_DIR, lookup
from lmgcot.config.threads import USER_SETTING, usable_cores
from lmgcot.pipeline import run

SWEEPS_DIR = Path(CONFIG_DIR) / "sweep"
SWEEPS = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
# Grid sweeps (the basic sweeper); `optuna` searches instead and is tested on its own.
GRID_SWEEPS = [s for s in SWEEPS if s != "optuna"]
# What stands in, offline, for the pieces a sweep sets that need weights, data files or a key.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", USER_SETTING)
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


@pytest.mark.unit
def test_the_expected_sweeps_ship():
    assert {
        "reward_mix",
        "student_size",
        "self_consistency",
        "teacher_samples",
        "backend",
        "paper_hotpotqa",
        "paper_2wiki",
        "optuna",
    } <= set(SWEEPS)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("overrides", "folder"), [([], "adhoc"), (["+sweep=reward_mix"], "reward_mix")]
)
def test_a_multirun_folder_is_named_by_its_sweep_or_adhoc(overrides, folder, tmp_path):
    cfg = _compose([*overrides, f"paths.output_dir={tmp_path}"], hydra_config=True)
    assert Path(cfg.hydra.sweep.dir).parent.parent == tmp_path / "multirun" / folder


@pytest.mark.stage
@pytest.mark.slow
@pytest.mark.parametrize("name", GRID_SWEEPS)
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


@pytest.mark.unit
def test_the_paper_sweeps_set_the_papers_setting():
    for name, dataset in (("paper_hotpotqa", "hotpotqa"), ("paper_2wiki", "2wiki")):
        cfg = _compose([f"+sweep={name}"])
        assert cfg.dataset._target_.endswith(("HotpotQA", "TwoWiki"))
        assert dataset in cfg.dataset._target_.lower().replace("twowiki", "2wiki")
        assert cfg.student.pretrained.startswith("google/flan-t5")
        assert cfg.large_lm.model == "google/flan-t5-xxl"


@pytest.mark.e2e
@pytest.mark.slow
def test_a_sweep_multirun_shares_its_teacher_and_student_and_groups_wandb(tmp_path):
    sweep_dir = _reward_pair(tmp_path, "logger=wandb")
    results = [json.loads((sweep_dir / j / "results.json").read_text()) for j in ("0", "1")]
    # The second job took the first one's teacher rationales and distilled student.
    assert "teacher" not in results[1]["llm"]["by_stage"]
    assert results[1]["distill"] == results[0]["distill"]
    assert results[0]["refine"]["reward"] != results[1]["refine"]["reward"]
    for job in ("0", "1"):
        [wandb_file] = (sweep_dir / job / "wandb").glob("offline-run-*/run-*.wandb")
        assert b"reward_mix" in wandb_file.read_bytes()  # the W&B group


def _reward_pair(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> Path:
    """Run two jobs of reward_mix (task and rationale, seed 0) through the CLI; the sweep dir."""
    args = ["-m", "+sweep=reward_mix", "reward=task,rationale", "seed=0", *QUICK, *extra]
    proc = lmgcot(tmp_path, *args, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [sweep_dir] = (tmp_path / "outputs" / "multirun" / "reward_mix").glob("*/*")
    return sweep_dir


def _job_results(sweep_dir: Path) -> list[dict]:
    return [
        json.loads(p.read_text())
        for p in sorted(sweep_dir.glob("*/results.json"), key=lambda p: int(p.parent.name))
    ]


@pytest.mark.e2e
@pytest.mark.slow
def test_the_optuna_sweep_maximises_the_validation_task_score(tmp_path):
    cfg = _compose(["+sweep=optuna"], hydra_config=True)
    assert "optuna" in cfg.hydra.sweeper._target_.lower()
    assert cfg.objective == "refine.val_task" and cfg.hydra.sweeper.direction == "maximize"
    proc = lmgcot(tmp_path, "-m", "+sweep=optuna", "hydra.sweeper.n_trials=2", *QUICK)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [sweep_dir] = (tmp_path / "outputs" / "multirun" / "optuna").glob("*/*")
    trials = _job_results(sweep_dir)
    assert len(trials) == 2
    assert trials[0]["refine"]["kl_coef"] != trials[1]["refine"]["kl_coef"]  # two different draws
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(lookup(t, "refine.val_task") for t in trials)
    assert set(best["best_params"]) >= {"rl.optimizer.lr", "rl.kl.coef", "reward.weights.fluency"}


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize(
    ("objective", "hint"),
    [
        ("refine.no_such_number", ""),  # no refine stage ran
        # A stage that ran but lacks the key: one reused from a store made before it was recorded.
        ("teacher.no_such_number", " (its teacher stage, reused from an earlier run, does not"),
    ],
)
def test_a_bad_objective_is_one_line(tmp_path, objective, hint):
    proc = lmgcot(tmp_path, *QUICK, "stages=[teacher]", f"objective={objective}")
    assert proc.returncode == 2
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("lmgcot: error:")]
    assert line.startswith(
        f"lmgcot: error: objective={objective}: results.json has no number there"
    )
    assert (hint in line) if hint else line.endswith("there"), line


@pytest.mark.e2e
@pytest.mark.slow
def test_parallel_jobs_with_the_joblib_launcher_share_the_teacher_and_split_the_cores(tmp_path):
    # No thread count from the environment: each job chooses its own share of the cores.
    env = {k: v for k, v in _env(tmp_path).items() if k not in THREAD_VARIABLES}
    sweep_dir = _reward_pair(
        tmp_path,
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "stages=[teacher,distill]",
        env=env,
    )
    jobs = _job_results(sweep_dir)
    assert len(jobs) == 2
    teacher_calls = [j["llm"]["by_stage"].get("teacher", {}).get("calls", 0) for j in jobs]
    # One call per rationale sample: the synthetic/tiny schedule asks for several per question.
    n_prompts = sum(jobs[0]["teacher"][split]["rationales"] for split in ("train", "val"))
    assert sorted(teacher_calls) == [0, n_prompts]
    assert jobs[0]["distill"] == jobs[1]["distill"]
    cores = usable_cores()
    expected = max(1, cores // 2)
    for job, results in enumerate(jobs):
        assert results["setup"]["threads"] == expected
        log = (sweep_dir / str(job) / "lmgcot.log").read_text()
        found = re.findall(r"threads: (\d+) \((.*)\)", log)
        assert found == [(str(expected), f"{cores} usable cores / 2 jobs at once")]


@pytest.mark.e2e
@pytest.mark.slow
def test_the_slurm_launcher_composes_and_submitit_runs_the_jobs_locally(tmp_path):
    cfg = _compose(["+sweep=reward_mix", "hydra/launcher=slurm"], hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.timeout_min > 0
    sweep_dir = _reward_pair(
        tmp_path,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "stages=[teacher]",
    )
    assert len(_job_results(sweep_dir)) == 2
    assert (sweep_dir / ".submitit").is_dir()


@pytest.mark.unit
def test_the_wandb_sweep_file_is_reward_mix_as_hydra_overrides():
    spec = yaml.safe_load((SWEEPS_DIR / "wandb_reward_mix.yml").read_text())
    grid = _compose(["+sweep=reward_mix"], hydra_config=True).hydra.sweeper.params
    rewards = sorted(p.stem for p in (Path(CONFIG_DIR) / "reward").glob("*.yaml"))
    assert spec["method"] == "grid"
    assert sorted(spec["parameters"]["reward"]["values"]) == rewards
    assert spec["parameters"]["seed"]["values"] == [int(s) for s in str(grid.seed).split(",")]
    # What `wandb agent` runs: the program, then each parameter as key=value (${args_no_hyphens}).
    args = []
    for part in spec["command"][1:]:
        if part == "${args_no_hyphens}":
            args += [f"{k}={v['values'][0]}" for k, v in spec["parameters"].items()]
        else:
            args.append(part)
    cfg = _compose(shlex.split(" ".join(args)))
    assert cfg.sweep_name == "reward_mix" and cfg.logger.wandb.group == "reward_mix"
    assert cfg.reward.name == spec["parameters"]["reward"]["values"][0]
