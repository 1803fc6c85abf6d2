"""The real `lmgcot` command (`lmgcot.cli.main`, forked from a process that has done the imports:
tests/forkserver.py): help, --cfg, errors as one line, a full run.

Every run gets its own output root (LMGCOT_ROOT and cwd in a tmp dir) and an offline environment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import forkserver
import pytest
import yaml
from conftest import TINY_STUDENT

from lmgcot.cli import CONFIG_DIR

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONF = Path(CONFIG_DIR)
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
_SCRIPT = Path(sys.executable).with_name("lmgcot")
LMGCOT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "lmgcot.cli"]
# A seconds-long pipeline: the smoke experiment with the tests' tiny student.
QUICK = ["experiment=smoke", *TINY_STUDENT, "trainer.enable_progress_bar=false"]
TIMEOUT_S = 300


def _env(root: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "LMGCOT_ROOT": str(root),
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        # Several of these processes share two cores: more threads only slow each other down.
        "OMP_NUM_THREADS": "1",
    }
    for key in ("WANDB_API_KEY", "HYDRA_FULL_ERROR"):
        env.pop(key, None)
    return env


def _start(root: Path, *args: str) -> subprocess.Popen:
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [*LMGCOT, *args],
        cwd=root,
        env=_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lmgcot(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`lmgcot *args` in `root` with the offline environment (or `env`), forked from a process
    that has done the imports (tests/forkserver.py)."""
    root.mkdir(parents=True, exist_ok=True)
    return forkserver.run(LMGCOT, list(args), root, _env(root) if env is None else env, TIMEOUT_S)


# -- Hydra's own handling: no pipeline code runs ------------------------------------------------


def test_help_lists_every_group_with_its_options(tmp_path):
    proc = lmgcot(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("lmgcot: LM-Guided Chain-of-Thought")
    for group in GROUPS:
        options = ", ".join(sorted(f.stem for f in (CONF / group).glob("*.yaml")))
        assert f"\n{group}: {options}\n" in proc.stdout, f"--help does not list {group}"
    assert not (tmp_path / "outputs").exists()


def test_cfg_job_prints_the_config_and_runs_nothing(tmp_path):
    proc = lmgcot(tmp_path, "--cfg", "job", "experiment=smoke")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert "dataset:" in proc.stdout
    assert cfg["dataset"]["_target_"] == "lmgcot.data.synthetic.SyntheticMultiHop"
    assert cfg["dataset"]["max_train"] == 32  # the experiment is applied
    assert "hydra" not in cfg  # `job` prints the job's config only
    # Hydra prints and exits: no run directory, no cache, nothing in the working directory.
    assert list(tmp_path.iterdir()) == []
    assert "run directory" not in proc.stdout


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("dataset=nope", ["Could not find 'dataset/nope'", "Available options in 'dataset'"]),
        ("dataset.n_trian=3", ["Could not override 'dataset.n_trian'", "n_trian"]),
    ],
)
def test_unknown_option_or_key_is_hydras_message_without_traceback(tmp_path, override, expected):
    proc = lmgcot(tmp_path, override)
    assert proc.returncode != 0
    for text in expected:
        assert text in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "outputs").exists()


# -- values our code checks: exit 2, one line, before any work ----------------------------------

BAD_VALUES = {
    "dataset.n_train=-1": "dataset.n_train",
    "dataset.context=weird": "dataset.context",
    "stages=[nope]": "stages",
    "evaluation.methods=[nope]": "evaluation.methods",
    "teacher.num_samples=0": "teacher.num_samples",
    "large_lm.error_rate=2": "large_lm.error_rate",
    "reward.weights.task=-1": "reward.weights.task=-1: must be >= 0",
    # The default mix (reward=all) has nine weights: start from the one-weight mix.
    "reward=task reward.weights.task=0": "reward.weights: all weights are 0",
    "reward.scorer=judge": "reward.scorer=auto",  # the simulated large LM cannot judge
    "rl.kl.estimator=k9": "rl.kl.estimator",
    "rl.keep_best_alpha=1.5": "rl.keep_best_alpha=1.5: must be within (0, 1), or null",
    "rl.samples_per_question=3": "rl.rollout_batch_size=8 must be a multiple",
    "rl.samples_per_question=1": "rl.samples_per_question=1: rl.algorithm=",
    # One closed set stands for the rest (loss_agg, critic, grpo_scale share its check).
    "rl.algorithm=a2c": "rl.algorithm='a2c': allowed values are",
    "threads=0": "threads=0: must be >= 1, or null",
}
MALFORMED = "malformed hotpotqa file"


@dataclass
class Outcome:
    root: Path
    returncode: int
    stdout: str
    stderr: str
    bad_file: Path | None = None


# Runs `lmgcot.cli.main()` once per case, each in a child forked from one process that has paid
# for the imports (torch, Lightning: ~10 s of CPU each time). A child is what the console script
# is, less the imports: its own argv, cwd, LMGCOT_ROOT (and any other environment a case sets),
# stdout/stderr files and exit status. A prelude (fork_runs) runs first, e.g. to inject a fault.
_FORKING_LAUNCHER = r"""
import json, os, sys
sys.path.insert(0, sys.argv[2])
from forkserver import run_child
import lmgcot.cli, lmgcot.pipeline  # the imports every child inherits
children = {}
for root, args, env in json.loads(sys.argv[1]):
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid:
        children[pid] = root
        continue
    out = os.path.join(root, "..", os.path.basename(root))
    run_child({"cwd": root, "env": {**os.environ, "LMGCOT_ROOT": root, **env}, "args": args,
               "stdout": out + ".stdout.txt", "stderr": out + ".stderr.txt"})
codes = {}
for _ in range(len(children)):
    pid, status = os.wait()
    codes[children[pid]] = os.waitstatus_to_exitcode(status)
print(json.dumps(codes))
"""


def fork_runs(
    base: Path,
    args: dict[str, list[str]],
    envs: dict[str, dict[str, str]] | None = None,
    prelude: str = "",
) -> dict[str, Outcome]:
    """`lmgcot *args[name]` for every case, each in its own forked process (_FORKING_LAUNCHER) with
    its own root under `base` and the environment `envs[name]` on top of the offline one."""
    envs = envs or {}
    roots = {name: base / f"r{i}" for i, name in enumerate(args)}
    for root in roots.values():
        root.mkdir()
    cases = json.dumps([[str(roots[name]), a, envs.get(name, {})] for name, a in args.items()])
    launcher = subprocess.run(
        [sys.executable, "-c", prelude + _FORKING_LAUNCHER, cases, forkserver.TESTS],
        cwd=base,
        env=_env(base),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert launcher.returncode == 0, launcher.stderr[-3000:]
    codes = json.loads(launcher.stdout.strip().splitlines()[-1])
    outcomes = {}
    for name, root in roots.items():
        out, err = (base / f"{root.name}.{s}.txt" for s in ("stdout", "stderr"))
        outcomes[name] = Outcome(root, codes[str(root)], out.read_text(), err.read_text())
    return outcomes


@pytest.fixture(scope="module")
def failing_runs(tmp_path_factory):
    """Every failing run, each in its own forked process (see _FORKING_LAUNCHER)."""
    base = tmp_path_factory.mktemp("failing")
    bad_json = base / "hotpot_bad.json"
    bad_json.write_text('[{"_id": "a", "question": "Who?", ')
    args = {override: [*override.split(), *QUICK] for override in BAD_VALUES}
    args[MALFORMED] = ["dataset=hotpotqa", f"dataset.path={bad_json}", *TINY_STUDENT]
    outcomes = fork_runs(base, args)
    outcomes[MALFORMED].bad_file = bad_json
    return outcomes


def _assert_one_line_error(outcome: Outcome, *needles: str) -> str:
    assert outcome.returncode == 2, outcome.stderr[-2000:]
    assert "Traceback" not in outcome.stderr + outcome.stdout
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr is not one line:\n{outcome.stderr}"
    assert lines[0].startswith("lmgcot: error: ")
    for needle in needles:
        assert needle in lines[0]
    # Nothing was produced: no results, and no stage artifacts from work done before the check.
    outputs = outcome.root / "outputs"
    assert not list(outputs.rglob("results.json"))
    assert not list(outputs.rglob("teacher/*.jsonl"))
    return lines[0]


@pytest.mark.parametrize("override", list(BAD_VALUES))
def test_bad_value_fails_with_one_line_naming_the_key(failing_runs, override):
    _assert_one_line_error(failing_runs[override], BAD_VALUES[override])


def test_malformed_hotpotqa_file_fails_with_one_line_naming_the_file(failing_runs):
    outcome = failing_runs[MALFORMED]
    line = _assert_one_line_error(outcome, str(outcome.bad_file))
    assert "JSON" in line


# -- a whole run ----------------------------------------------------------------------------------


def test_tiny_run_prints_the_table_and_writes_results(tmp_path):
    proc = lmgcot(tmp_path, *QUICK)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    header = next(line for line in out.splitlines() if line.startswith("method"))
    assert header.split() == ["method", "EM", "F1", "n"]
    methods = [
        "standard",
        "cot",
        "lm_guided_kd",
        "lm_guided_kd_sc",
        "lm_guided_rl",
        "lm_guided_rl_sc",
    ]
    found = re.findall(r"^run directory: (.+)$", out, re.M)
    assert len(found) == 1, out
    run_dir = Path(found[0])
    assert run_dir.is_dir() and tmp_path / "outputs" in run_dir.parents
    results = json.loads((run_dir / "results.json").read_text())
    # RL rows are starred, with a footnote, when refine kept the distilled student.
    kept = results["refine"]["selected"] == "distilled"
    for method in methods:
        mark = r"\*" if kept and method.startswith("lm_guided_rl") else ""
        pattern = rf"^{method}{mark}\s+[01]\.\d{{3}}\s+[01]\.\d{{3}}\s+16$"
        assert re.search(pattern, out, re.M), method
    assert ("* the distilled student: refine exported it unchanged" in out) == kept
    assert list(results["methods"]) == methods
    for m in results["methods"].values():
        assert {"em", "f1", "n"} <= set(m)
        assert isinstance(m["em"], float) and isinstance(m["f1"], float) and m["n"] == 16
    assert isinstance(results["rationale_quality"], dict)
    llm = results["llm"]
    assert {"calls", "cache_hits", "input_tokens", "output_tokens", "cost_usd"} <= set(llm)
    assert llm["calls"] > 0 and llm["input_tokens"] > 0 and llm["output_tokens"] > 0
    assert llm["cost_usd"] is None or isinstance(llm["cost_usd"], float)
    # Hydra's record of the job sits beside the results; nothing lands in the working directory.
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]
