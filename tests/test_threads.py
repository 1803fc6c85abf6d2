"""The `threads` setting: how the count is chosen, that it reaches torch, that no fingerprint holds
it (that the joblib launcher's jobs split the cores between them: tests/test_sweeps.py)."""

from __future__ import annotations

import os

import pytest
import torch
from omegaconf import OmegaConf

from lmgcot.config.threads import (
    USER_SETTING,
    busy_warning,
    choose,
    jobs_at_once,
    usable_cores,
    use_threads,
)
from lmgcot.config.validate import check
from lmgcot.errors import ConfigError
from lmgcot.pipeline.stages import STAGES

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("setting", "user", "cores", "jobs", "expected"),
    [
        (3, "", 8, 2, 3),  # an explicit count wins
        (3, "5", 8, 2, 3),  # ... over OMP_NUM_THREADS too
        (None, "5", 8, 2, 5),  # the user's OMP_NUM_THREADS is honoured
        (None, "6,2", 8, 1, 6),  # OpenMP's nested form: the outer level
        (None, "", 8, 1, 8),
        (None, "", 8, 2, 4),
        (None, "", 8, 3, 2),
        (None, "", 2, 4, 1),  # never below 1
        (None, "many", 8, 2, 4),  # not a count: ignored
        (None, "0", 8, 2, 4),
    ],
)
def test_the_count_is_the_setting_else_omp_num_threads_else_cores_over_jobs(
    setting, user, cores, jobs, expected
):
    assert choose(setting, user, cores, jobs).count == expected


@pytest.mark.unit
@pytest.mark.parametrize(
    ("launcher", "expected"),
    [
        (None, 1),  # a single run
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 1),
        ({"_target_": JOBLIB, "n_jobs": 2}, 2),
        ({"_target_": JOBLIB, "n_jobs": 1}, 1),
        ({"_target_": JOBLIB, "n_jobs": None}, 1),
        ({"_target_": JOBLIB, "n_jobs": -1}, 8),  # joblib: every core
        ({"_target_": JOBLIB, "n_jobs": -2}, 7),  # all but one
        ({"_target_": JOBLIB, "n_jobs": -20}, 1),
    ],
)
def test_jobs_at_once_are_the_joblib_launchers_n_jobs(launcher, expected):
    node = None if launcher is None else OmegaConf.create(launcher)
    assert jobs_at_once(node, cores=8) == expected


@pytest.mark.unit
def test_use_threads_sets_torch_and_the_childrens_environment(monkeypatch, caplog):
    before = torch.get_num_threads()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", USER_SETTING):
        monkeypatch.delenv(var, raising=False)
    try:
        with caplog.at_level("INFO", logger="lmgcot"):
            chosen = use_threads(2)
        assert chosen.count == torch.get_num_threads() == 2
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "2"
        assert [r.getMessage() for r in caplog.records] == ["threads: 2 (threads=2)"]
        # A later job of the same process honours the user's setting, not the one just made.
        monkeypatch.setenv(USER_SETTING, "")
        assert use_threads(None).count == usable_cores()
    finally:
        torch.set_num_threads(before)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("setting", "user", "load", "warned"),
    [
        (None, "", 4.0, True),  # two automatic threads on 2 cores that others keep busy
        (None, "", 2.9, False),  # below one core above the cores: a sweep's own last job
        (2, "", 8.0, False),  # the user chose the count
        (None, "2", 8.0, False),
    ],
)
def test_automatic_threads_on_busy_cores_are_warned_about_not_changed(setting, user, load, warned):
    chosen = choose(setting, user, cores=2, jobs=1)
    assert chosen.count == 2
    assert (busy_warning(chosen, load, cores=2) is not None) == warned
    # One automatic thread waits on no other.
    assert busy_warning(choose(None, "", cores=2, jobs=2), 8.0, cores=2) is None


@pytest.mark.unit
def test_the_busy_warning_reaches_the_log(monkeypatch, caplog):
    before = torch.get_num_threads()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", USER_SETTING):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 5.0, 5.0))
    try:
        with caplog.at_level("INFO", logger="lmgcot"):
            assert use_threads(None).count == 2
        [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warning.startswith("threads: 2 chosen from the cores, but the load average is 5.0")
    finally:
        torch.set_num_threads(before)


@pytest.mark.unit
def test_a_count_below_one_is_one_line_before_any_work(compose_cfg):
    with pytest.raises(
        ConfigError, match=r"^threads=0: must be >= 1, or null \(null: automatic\)$"
    ):
        use_threads(0)
    with pytest.raises(ConfigError, match=r"^threads=0: must be >= 1"):
        check(compose_cfg("threads=0"))


@pytest.mark.unit
def test_no_stage_fingerprint_holds_threads(compose_cfg):
    automatic, pinned = compose_cfg("threads=null"), compose_cfg("threads=3")
    for name, stage in STAGES.items():
        assert stage.fingerprint(automatic) == stage.fingerprint(pinned), name
