"""What a new user meets on a first real run: a teacher that kept no val rationale, splits too
small for a stage, per-request HTTP log lines, the cost in the summary, `-m` after the overrides."""

from __future__ import annotations

import json
import logging

import pytest
from fake_api_server import FakeApiServer
from test_cli import QUICK, lmgcot
from test_data_official import good_record

from lmgcot.cli import check_modes
from lmgcot.data.example import Splits
from lmgcot.data.hotpotqa import HotpotQA
from lmgcot.errors import ConfigError, LmgcotError
from lmgcot.llm.anthropic import AnthropicLargeLM
from lmgcot.llm.base import GenerationParams
from lmgcot.pipeline import run
from lmgcot.pipeline.checks import check_splits
from lmgcot.pipeline.output import format_results_table
from lmgcot.utils.http_logs import HTTP_LOGGERS

# A teacher (the simulated large LM through a wrong entity every time) that is right on some
# training questions and on neither of the two val questions, with seed 0.
NO_VAL_KEPT = [
    "seed=0",
    "large_lm.error_rate=1.0",
    "dataset.n_train=8",
    "dataset.n_val=2",
    "dataset.n_test=2",
]


def _teacher_stats(run_dir) -> dict:
    return json.loads((run_dir / "teacher" / "stats.json").read_text())


@pytest.mark.stage
def test_a_teacher_that_kept_no_val_rationale_stops_distill_naming_the_settings(
    compose_cfg, tmp_path
):
    cfg = compose_cfg(*NO_VAL_KEPT, "stages=[teacher,distill]")
    with pytest.raises(LmgcotError) as err:
        run(cfg)
    stats = _teacher_stats(tmp_path / "run")
    assert stats["val"]["kept"] == 0 and stats["train"]["kept"] > 0, stats  # the premise
    message = str(err.value)
    assert "\n" not in message
    for needle in (
        "no validation pairs",
        "the 2 val questions",
        "teacher.filter_correct=false",
        "teacher.num_samples",
        "dataset.max_val",
    ):
        assert needle in message, message
    # Nothing half-written: no student, no checkpoint, no results.
    distill = tmp_path / "run" / "distill"
    assert not (distill / "student").exists()
    assert not list((tmp_path / "run").rglob("*.ckpt"))
    assert not (tmp_path / "run" / "results.json").exists()
    # The setting it names is enough.
    fixed = compose_cfg(
        *NO_VAL_KEPT, "stages=[teacher,distill]", "teacher.filter_correct=false", "force=true"
    )
    results = run(fixed)
    assert results["distill"]["val_pairs"] > 0
    assert (distill / "student").is_dir()


@pytest.mark.e2e
@pytest.mark.slow
def test_the_command_says_so_in_one_line_with_exit_2(tmp_path):
    proc = lmgcot(tmp_path, *QUICK, *NO_VAL_KEPT, "stages=[teacher,distill]")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmgcot: error: distill: no validation pairs")
    assert "teacher.filter_correct=false" in lines[0]
    assert not list(tmp_path.rglob("results.json")) and not list(tmp_path.rglob("*.ckpt"))


# -- splits a stage needs -----------------------------------------------------------------------


@pytest.mark.unit
def test_an_empty_split_names_how_it_was_made_and_the_setting_to_change(tmp_path):
    path = tmp_path / "six.json"
    path.write_text(json.dumps([good_record(f"r{i}") for i in range(6)]))
    one_file = HotpotQA(path=str(path))
    splits = one_file.load_splits()
    assert [len(s) for _, s in splits.items()] == [5, 1, 0]
    dataset = {"path": str(path), "split_fractions": [0.8, 0.1, 0.1], "max_test": 1000}
    with pytest.raises(ConfigError) as err:
        check_splits(splits, ["teacher", "distill", "evaluate"], "hotpotqa", dataset)
    assert str(err.value) == (
        "dataset=hotpotqa: the test split is empty: dataset.path's 6 records were split "
        "train/val/test 5/1/0 by dataset.split_fractions=[0.8, 0.1, 0.1]; use a larger file "
        "or give test a larger fraction"
    )
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps([good_record("d0")]))
    files = HotpotQA(train_path=str(path), eval_path=str(dev)).load_splits()
    assert (len(files.val), len(files.test)) == (0, 1)
    with pytest.raises(ConfigError, match=r"val split is empty: dataset.eval_path's 1 records"):
        check_splits(files, ["distill"], "hotpotqa", {"eval_path": str(dev)})
    check_splits(files, ["evaluate"], "hotpotqa", {"eval_path": str(dev)})  # no val needed
    generated = Splits(splits.train, [], splits.test)
    with pytest.raises(ConfigError, match=r"\(dataset.n_val=0\); raise dataset.n_val$"):
        check_splits(generated, ["distill"], "synthetic", {"n_val": 0})
    with pytest.raises(ConfigError, match=r"\(dataset.max_val=0\); raise dataset.max_val$"):
        check_splits(generated, ["distill"], "hotpotqa", {"max_val": 0, "path": str(path)})


# -- the log and the summary ----------------------------------------------------------------------


@pytest.mark.unit
def test_api_requests_leave_no_log_line_below_warning(monkeypatch, caplog):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-XYZ")
    caplog.set_level(logging.DEBUG)
    with FakeApiServer() as server:
        lm = AnthropicLargeLM("claude-test", base_url=server.url, max_retries=0)
        try:
            [[reply]] = lm.generate(["What is 2 plus 2?"], GenerationParams(max_new_tokens=8))
        finally:
            lm.close()
    assert reply.text and server.requests
    noisy = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name.split(".")[0].startswith(HTTP_LOGGERS) and r.levelno < logging.WARNING
    ]
    assert noisy == []


def _results(cost: float | None) -> dict:
    llm = {"calls": 28, "cache_hits": 13, "input_tokens": 280, "output_tokens": 224}
    return {
        "methods": {"standard": {"em": 0.5, "f1": 0.5, "n": 2}},
        "llm": {**llm, "cost_usd": cost},
    }


@pytest.mark.unit
def test_the_summary_line_carries_the_cost_when_there_is_one():
    priced = format_results_table(_results(0.01234)).splitlines()[-1]
    assert priced == "large LM: 28 calls, 13 cache hits, 280 input / 224 output tokens, $0.0123"
    free = format_results_table(_results(None)).splitlines()[-1]
    assert free == "large LM: 28 calls, 13 cache hits, 280 input / 224 output tokens"


# -- the command line ------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_multirun_flag_after_the_overrides_still_sweeps(tmp_path):
    proc = lmgcot(tmp_path, "experiment=smoke", "-m", "dataset.n_train=-1,-2")
    assert "unrecognized arguments" not in proc.stderr
    out = proc.stdout + proc.stderr
    # Both values swept: two jobs, the first stopped by its bad value.
    assert "Launching 2 jobs" in out and "#0 : experiment=smoke dataset.n_train=-1" in out
    assert "lmgcot: error: dataset.n_train=-1: must be >= 0" in proc.stderr


# -- a run size between smoke and the default -------------------------------------------------------


@pytest.mark.unit
def test_quick_sits_between_smoke_and_the_default(compose_cfg):
    def size(*overrides: str) -> tuple:
        cfg = compose_cfg(*overrides, fast=False)
        n = cfg.dataset.get("n_test")
        tests = cfg.dataset.max_test if n is None else min(n, cfg.dataset.max_test or n)
        return cfg.rl.rollouts, tests, cfg.trainer.max_steps

    smoke, quick, full = size("experiment=smoke"), size("experiment=quick"), size()
    for low, mid, high in zip(smoke[:2], quick[:2], full[:2], strict=True):
        assert low < mid < high, (smoke, quick, full)
    # The student needs the default's distillation steps (half of them leave it useless).
    assert quick[2] == full[2]
    # Every dataset takes it, as smoke: it sets only keys they all have.
    assert size("experiment=quick", "dataset=hotpotqa")[1] == quick[1]


@pytest.mark.unit
@pytest.mark.parametrize(
    "argv",
    [["-m", "seed=0,1", "--cfg", "hydra"], ["--cfg=job", "seed=0,1", "--multirun"], ["-m", "-i"]],
)
def test_multirun_with_a_show_flag_is_one_line_not_hydras_traceback(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        check_modes(argv)
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lmgcot: error: -") and "cannot be combined with -m" in line


@pytest.mark.unit
@pytest.mark.parametrize("argv", [["--cfg", "job", "seed=0"], ["-m", "seed=0,1"], []])
def test_a_show_flag_or_multirun_alone_passes(argv):
    check_modes(argv)
