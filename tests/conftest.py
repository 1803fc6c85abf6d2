"""Shared fixtures: Hydra configs composed for fast, offline, CPU-only tests in tmp dirs."""

from __future__ import annotations

import os
import sqlite3
import sys
import types
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lmgcot.cli import CONFIG_DIR

# Never reach for the network, whatever the developer's environment says.
os.environ["WANDB_MODE"] = "offline"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.pop("WANDB_API_KEY", None)

# Sizes for the synthetic dataset (skipped when a test picks another dataset).
SMALL_SYNTHETIC = ["dataset.n_train=16", "dataset.n_val=4", "dataset.n_test=8"]

# A student small enough that a few training steps take well under a second.
TINY_STUDENT = [
    "student.architecture.d_model=32",
    "student.architecture.d_ff=64",
    "student.architecture.d_kv=8",
    "student.architecture.num_heads=2",
    "student.architecture.num_layers=1",
    "student.architecture.num_decoder_layers=1",
    "student.max_target_length=24",
]

FAST = [
    "trainer.max_epochs=3",
    "distill.batch_size=4",
    "trainer.max_steps=3",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "evaluation.self_consistency.k=2",
    "print_results=false",
    "rl.rollouts=2",
    "rl.rollout_batch_size=4",
    "rl.samples_per_question=2",
    "rl.minibatch_size=2",
    "rl.ppo_epochs=1",
    "rl.val_every=1",
    "rl.max_val_questions=4",
]


@pytest.fixture
def compose_cfg(tmp_path: Path):
    """compose_cfg(*overrides) -> DictConfig rooted in tmp_path (outputs, cache, run dir)."""

    def _compose(*overrides: str, fast: bool = True, run_dir: Path | None = None):
        base = [
            f"paths.output_dir={tmp_path / 'outputs'}",
            f"paths.run_dir={run_dir or tmp_path / 'run'}",
            "distill.num_workers=0",
            "trainer.accelerator=cpu",
        ]
        extra = (TINY_STUDENT + FAST) if fast else []
        if fast and not any(o.startswith("dataset=") for o in overrides):
            extra += SMALL_SYNTHETIC
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("config", overrides=base + extra + list(overrides))

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def fake_hub(monkeypatch):
    """A stand-in `datasets` module: no network. Returns (calls, data): each `load_dataset` call's
    arguments are appended to `calls`, and every call returns `data` (a test fills it)."""
    calls: list = []
    data: dict = {}

    def load_dataset(*args):
        calls.append(args)
        return data

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls, data


TIERS = ("unit", "stage", "e2e")


def pytest_configure(config):
    # One torch thread per test process: tiny models gain nothing from two, and with two xdist
    # workers on two cores more threads only slow each other down. The xdist controller runs no
    # test, so it skips importing torch (seconds before the workers start).
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Every test names its tier (pyproject.toml, README: Development), so `-m` selects reliably."""
    untiered = [i.nodeid for i in items if not any(i.get_closest_marker(t) for t in TIERS)]
    if untiered:
        raise pytest.UsageError(
            "tests without a tier marker (add `pytestmark = pytest.mark.unit`, or stage / e2e):\n  "
            + "\n  ".join(untiered)
        )
    # Files with end-to-end tests first, then those with stage tests: `-n 2 --dist loadfile` hands
    # out whole files in this order, and the longest first keeps both workers busy to the end.
    weight = {}
    for item in items:
        rank = 0 if item.get_closest_marker("e2e") else 1 if item.get_closest_marker("stage") else 2
        weight[item.path] = min(rank, weight.get(item.path, 2))
    items.sort(key=lambda item: weight[item.path])


def config_group(group: str, option: str | None = None, *overrides: str) -> dict:
    """One config group's node as the pipeline gets it (composed through Hydra, so an option's
    schema defaults are in), as a plain dict: what a test passes to a constructor."""
    from omegaconf import OmegaConf

    chosen = [f"{group}={option}"] if option else []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("config", overrides=chosen + list(overrides))
        return OmegaConf.to_container(cfg[group], resolve=True)
    finally:
        GlobalHydra.instance().clear()


def quiet_trainer(root: Path | None = None, **options):
    """A CPU Lightning Trainer that writes nothing but what `options` ask for: no logger,
    checkpoints, progress bar or model summary; its files (if any) under `root`."""
    import pytorch_lightning as pl

    quiet = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    if root is not None:
        quiet["default_root_dir"] = root
    return pl.Trainer(**{**quiet, **options})


def sweep_params(values, first_of=lambda v: None, ids=str):
    """Cases of an exhaustive parametrised sweep: the first case of each kind (`first_of`; by
    default one kind) stands for the rest in the fast tier; the others are marked slow, so only
    the full suite runs them all."""
    seen = set()
    for value in values:
        kind = first_of(value)
        marks = () if kind not in seen else pytest.mark.slow
        seen.add(kind)
        args = value if isinstance(value, tuple) else (value,)
        yield pytest.param(*args, id=ids(value), marks=marks)


def cache_rows(path: Path) -> int:
    """Rows of a call cache file, read through a separate connection (0 before the table exists)."""
    conn = sqlite3.connect(str(path), timeout=10)
    try:
        return conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()
