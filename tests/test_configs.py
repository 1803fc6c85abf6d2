"""Every option of every config group composes and has its group's keys; every experiment runs.

Options are discovered by listing conf/, so a new YAML file is covered without editing this file.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from conftest import sweep_params
from hydra.utils import get_class, get_method
from omegaconf import DictConfig, OmegaConf

from lmgcot.cli import CONFIG_DIR
from lmgcot.data.official import SAMPLES_DIR
from lmgcot.eval.methods import METHODS
from lmgcot.pipeline import run
from lmgcot.pipeline.builders import build

CONF = Path(CONFIG_DIR)
# conf/hydra holds options of Hydra's own groups (launchers), checked in test_sweeps.
# prompt_presets are pulled in by dataset options, never selected on their own.
GROUPS = sorted(
    p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "prompt_presets")
)
# Groups outside the defaults list: appended with `+group=option`.
APPENDED = ("sweep",)
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]
EXPERIMENTS = [o for g, o in OPTIONS if g == "experiment"]


ASPECTS = (
    "factuality",
    "relevance",
    "logicality",
    "consistency",
    "coherence",
    "fluency",
    "naturalness",
    "readability",
)
REWARD_COMPONENTS = ("task", *ASPECTS)

# The config contract of docs/MISSION.md: groups and the option names other parts rely on.
CONTRACT = {
    "dataset": ("synthetic", "hotpotqa", "2wiki"),
    "student": (
        "tiny",
        "t5_small",
        "t5_base",
        "t5_large",
        "flan_t5_small",
        "flan_t5_base",
        "flan_t5_large",
    ),
    "large_lm": ("simulated", "anthropic", "hf", "openai"),
    "reward": ("task", "rationale", "all", *ASPECTS),
    "trainer": (),
    "logger": (),
    "experiment": (),
}
NOT_YET: set[tuple[str, str]] = set()


def _contract_params():
    for group, options in CONTRACT.items():
        yield pytest.param(group, None, id=f"{group}")
        for option in options:
            marks = ()
            if (group, option) in NOT_YET:
                marks = pytest.mark.xfail(
                    strict=True, reason="anthropic/openai backends are issue 4"
                )
            yield pytest.param(group, option, id=f"{group}={option}", marks=marks)


@pytest.mark.unit
@pytest.mark.parametrize(("group", "option"), _contract_params())
def test_config_contract_groups_and_options_exist(group, option):
    assert (CONF / group).is_dir(), f"conf/{group}/ is missing"
    if option is not None:
        assert (CONF / group / f"{option}.yaml").is_file(), f"conf/{group}/{option}.yaml is missing"


def _node_kwargs(node: DictConfig) -> dict:
    return {k: v for k, v in node.items() if not str(k).startswith("_")}


def _check_target(node: DictConfig, where: str) -> None:
    """`_target_` imports, and the target accepts every key the node gives it."""
    assert "_target_" in node, f"{where}: no _target_"
    target = node._target_
    try:
        obj = get_class(target)
    except ValueError:
        obj = get_method(target)  # a function target (partial schedulers and the like)
    params = inspect.signature(obj).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = set(_node_kwargs(node)) - set(params)
        assert not unknown, f"{where}: {target} does not take {sorted(unknown)}"


def _check_group_node(cfg: DictConfig, group: str, option: str) -> None:
    node = cfg.get(group)
    if group == "student":
        assert {"name", "pretrained", "max_source_length", "max_target_length"} <= set(node)
        assert node.name == option
        assert int(node.max_source_length) > 0 and int(node.max_target_length) > 0
        # A student is either a checkpoint or built from an architecture, never neither.
        assert node.pretrained or node.get("architecture"), f"student={option}: nothing to build"
    elif group == "large_lm":
        _check_target(node, f"large_lm={option}")
        assert node.get("model"), f"large_lm={option}: no model name"
    elif group == "dataset":
        _check_target(node, f"dataset={option}")
        assert node.context in ("all", "supporting")
        assert {"max_train", "max_val", "max_test", "seed"} <= set(node)
    elif group == "reward":
        assert node.name == option
        weights = {k: float(v) for k, v in node.weights.items()}
        assert set(weights) == set(REWARD_COMPONENTS)
        assert all(w >= 0 for w in weights.values()) and sum(weights.values()) > 0
        nonzero = {k for k, w in weights.items() if w > 0}
        expected = {
            "task": {"task"},
            "rationale": set(ASPECTS),
            "all": set(REWARD_COMPONENTS),
        }.get(option, {option} if option in ASPECTS else None)
        if expected is not None:
            assert nonzero == expected, f"reward={option} weights {sorted(nonzero)}"
    elif group == "trainer":
        _check_target(node, f"trainer={option}")
        assert get_class(node._target_).__name__ == "Trainer"
        assert {"accelerator", "devices", "precision", "max_epochs", "max_steps"} <= set(node)
    elif group == "logger":
        assert len(node) > 0
        for name, lg in node.items():
            _check_target(lg, f"logger={option}: {name}")
            # Logger files belong in the run directory, never the working directory.
            assert Path(lg.save_dir) == Path(cfg.paths.run_dir), f"logger.{name}.save_dir"
        assert "csv" in node, f"logger={option}: the CSV metrics file is always written"
    elif group in ("experiment", "schedule", "sweep"):
        pass  # @package _global_ files: checked against their own YAML (sweeps: test_sweeps.py)
    else:
        assert isinstance(node, DictConfig) and len(node) > 0, f"{group}={option}: empty node"
        if "_target_" in node:
            _check_target(node, f"{group}={option}")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("group", "option"), sweep_params(OPTIONS, first_of=lambda v: v[0], ids=lambda v: "=".join(v))
)
def test_every_option_composes_with_its_groups_keys(compose_cfg, group, option):
    # Without the fast overrides: they size the tiny student, which a checkpoint student lacks.
    prefix = "+" if group in APPENDED else ""
    cfg = compose_cfg(f"{prefix}{group}={option}", fast=False)
    # Every interpolation resolves (run_dir is given, so Hydra's runtime is not needed).
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    for name in GROUPS:
        if name not in ("experiment", "schedule", *APPENDED):
            assert name in cfg, f"{group}={option}: group {name} is missing from the config"
    _check_group_node(cfg, group, option)


@pytest.mark.unit
def test_option_discovery_sees_the_known_files():
    # Guards the parametrisation: an empty OPTIONS list would make the test above pass vacuously.
    assert {"dataset", "student", "large_lm", "reward", "experiment"} <= set(GROUPS)
    assert ("dataset", "synthetic") in OPTIONS and ("experiment", "smoke") in OPTIONS


def _leaves(node, prefix=""):
    if isinstance(node, DictConfig):
        for k, v in node.items():
            if k != "defaults":
                yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), node


@pytest.mark.unit
@pytest.mark.parametrize("name", sweep_params(EXPERIMENTS))
def test_experiment_sets_what_its_file_says(compose_cfg, name):
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    assert "# @package _global_" in text, f"experiment={name}: not a _global_ package"
    cfg = compose_cfg(f"experiment={name}", fast=False)
    for key, value in _leaves(OmegaConf.load(CONF / "experiment" / f"{name}.yaml")):
        got = OmegaConf.select(cfg, key)
        if OmegaConf.is_config(value):
            got, value = OmegaConf.to_container(got), OmegaConf.to_container(value)
        assert got == value, f"experiment={name}: {key} is {got!r}, the file sets {value!r}"


@pytest.mark.unit
def test_command_line_overrides_win_over_an_experiment(compose_cfg):
    # Hydra applies key=value overrides after the whole defaults list (experiment included), so
    # the fixture's fast settings hold whatever the experiment sets.
    cfg = compose_cfg("experiment=smoke")
    assert cfg.trainer.max_steps == 3 and cfg.dataset.n_train == 16
    assert cfg.student.max_target_length == 24
    assert compose_cfg("experiment=smoke", fast=False).trainer.max_steps == 4


@pytest.mark.unit
def test_a_dataset_and_student_pair_brings_its_tuned_schedule(compose_cfg):
    def schedule(*overrides: str) -> tuple:
        cfg = compose_cfg(*overrides, fast=False)
        return cfg.distill.optimizer.lr, cfg.trainer.max_steps

    tuned = OmegaConf.load(CONF / "schedule" / "synthetic_tiny.yaml")
    own = (tuned.distill.optimizer.lr, tuned.trainer.max_steps)
    group = OmegaConf.load(CONF / "distill" / "default.yaml").optimizer.lr
    plain = (group, OmegaConf.load(CONF / "trainer" / "default.yaml").max_steps)
    assert schedule() == own != plain  # the offline default: synthetic with the tiny student
    # Another pair keeps the groups' settings; the command line wins over the pair's.
    assert schedule("dataset=last_letter") == plain
    assert schedule("student=tiny_large") == plain
    assert schedule("student=flan_t5_small") == plain
    assert schedule("trainer.max_steps=300", "distill.optimizer.lr=3e-3") == (3e-3, 300)
    assert schedule("trainer=gpu") == own


@pytest.mark.stage
@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_runs_end_to_end(compose_cfg, tmp_path, name):
    cfg = compose_cfg(f"experiment={name}")
    results = run(cfg)
    assert (tmp_path / "run" / "results.json").is_file()
    assert list(results["methods"]) == [m for m in METHODS if m in cfg.evaluation.methods]
    for m in results["methods"].values():
        assert m["n"] == cfg.dataset.n_test
        assert 0.0 <= m["em"] <= 1.0 and 0.0 <= m["f1"] <= 1.0
    n_train = cfg.dataset.n_train
    if "teacher" in cfg.stages:
        assert results["teacher"]["train"]["rationales"] == n_train * cfg.teacher.num_samples
    else:  # vanilla fine-tuning learns gold answers: no teacher, no large-LM call to train
        assert results["teacher"] == {} and results["distill"]["train_pairs"] == n_train
    assert results["distill"]["steps"] == cfg.trainer.max_steps


# An experiment must not assume the synthetic dataset: `lmgcot experiment=smoke dataset=hotpotqa`
# is how a user would smoke-test a real dataset.
SAMPLE_DATASETS = ("hotpotqa", "2wiki")


def _experiment_dataset_params():
    for name in EXPERIMENTS:
        for dataset in SAMPLE_DATASETS:
            # Each file dataset under the first experiment in the fast tier; all pairs in the full.
            marks = () if name == EXPERIMENTS[0] else pytest.mark.slow
            yield pytest.param(name, dataset, id=f"{name}-{dataset}", marks=marks)


@pytest.mark.unit
@pytest.mark.parametrize(("name", "dataset"), _experiment_dataset_params())
def test_every_experiment_builds_every_file_dataset(compose_cfg, name, dataset):
    sample = SAMPLES_DIR / f"{dataset}_sample.json"
    cfg = compose_cfg(f"experiment={name}", f"dataset={dataset}", f"dataset.path={sample}")
    splits = build(cfg.dataset, "dataset").load_splits()
    assert splits.train and splits.test
