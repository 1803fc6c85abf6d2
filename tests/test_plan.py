"""The run plan (`plan=true`) and the spend cap (`large_lm.max_cost_usd`), against the local fake
Anthropic and OpenAI-compatible servers answering as the simulated large LM: the plan counts what
a run then sends, the cap stops a run before it passes, and a rerun pays only for the rest."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fake_api_server import FakeApiServer

from lmgcot.config.validate import check
from lmgcot.errors import ConfigError
from lmgcot.llm.base import SpendCapReached
from lmgcot.llm.simulated import SimulatedLargeLM
from lmgcot.pipeline import run
from lmgcot.pipeline.plan import format_plan, plan

pytestmark = pytest.mark.stage

PRICE = {"input": 3.0, "output": 15.0}
MODEL = "claude-test"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-plan-test")
    simulated = SimulatedLargeLM()
    with FakeApiServer(replier=lambda prompt: simulated.respond(prompt)) as s:
        yield s


def api_args(server: FakeApiServer, backend: str, *extra: str) -> list[str]:
    """A teacher + evaluate run on the fake server, with the model priced."""
    url = server.url if backend == "anthropic" else f"{server.url}/v1"
    return [
        f"large_lm={backend}",
        f"large_lm.base_url={url}",
        f"large_lm.model={MODEL}",
        f"large_lm.prices={{{MODEL}: {{input: {PRICE['input']}, output: {PRICE['output']}}}}}",
        "large_lm.retry_base_s=0.001",
        "large_lm.batch_size=8",
        "stages=[teacher,evaluate]",
        "evaluation.methods=[standard,cot]",
        "evaluation.rationale_quality=false",
        "teacher.num_samples=2",
        *extra,
    ]


def billed_usd(server: FakeApiServer, discount: float = 1.0) -> float:
    """What the server's replies would be billed at PRICE (the cache prices their defaults)."""
    cost = 0.0
    for u in server.usages:
        cost += (
            u["input_tokens"] * PRICE["input"]
            + u["output_tokens"] * PRICE["output"]
            + u.get("cache_read_input_tokens", 0) * PRICE["input"] * 0.1
            + u.get("cache_creation_input_tokens", 0) * PRICE["input"] * 1.25
        )
    return discount * cost / 1e6


def billed_input(server: FakeApiServer) -> int:
    return sum(
        u["input_tokens"]
        + u.get("cache_read_input_tokens", 0)
        + u.get("cache_creation_input_tokens", 0)
        for u in server.usages
    )


# Zero-shot-CoT's answer step is built from each sampled rationale: the plan must count one per
# sample, not one per question. (The server's own replies there: the simulated LM's ignore the
# sample, and two equal rationales make one answer step, sent once: the plan's upper bound.)
@pytest.mark.parametrize(
    ("backend", "prompting"), [("anthropic", "cot"), ("openai", "zero_shot_cot")]
)
def test_the_plan_counts_exactly_what_the_run_sends(
    compose_cfg, server, backend, prompting, tmp_path
):
    if prompting == "zero_shot_cot":
        server.replier = None
    # A first small run leaves cached replies of each kind (rationales, answers) for the plan to
    # measure tokens on (a plan on an empty cache uses the approximation: the next test).
    args = api_args(server, backend, f"teacher.prompting={prompting}")
    small = ("dataset.max_train=3", "dataset.max_test=2", "evaluation.methods=[standard]")
    run(compose_cfg(*args, *small))
    server.reset()

    cfg = compose_cfg(*args, run_dir=tmp_path / "full")
    planned = plan(cfg)
    assert server.requests == []  # the plan sent nothing
    assert not (tmp_path / "full").exists()  # and made no run directory
    results = run(cfg)
    by_stage = results["llm"]["by_stage"]
    for stage in ("teacher", "evaluate"):
        row = planned["stages"][stage]
        assert row["estimated_requests"] == 0, "teacher and standard/cot are counted, not guessed"
        assert row["requests"] == by_stage[stage]["calls"], stage
        assert row["cache_hits"] == by_stage[stage]["cache_hits"], stage
    assert planned["total"]["requests"] == len(server.ok_requests()) > 0
    # Input tokens within 15% of what the server billed, the cost likewise (output tokens are
    # the mean of the cached replies of the same kind).
    print("input tokens planned / billed:", planned["total"]["input_tokens"], billed_input(server))
    print("cost planned / billed:", planned["total"]["cost_usd"], billed_usd(server))
    assert planned["total"]["input_tokens"] == pytest.approx(billed_input(server), rel=0.15)
    assert planned["total"]["cost_usd"] == pytest.approx(billed_usd(server), rel=0.15)
    assert results["llm"]["cost_usd"] == pytest.approx(billed_usd(server))

    # After the run: nothing left to send, from the run directory or from the cache alone.
    server.reset()
    again = plan(cfg)
    assert again["total"]["requests"] == 0
    fresh = plan(compose_cfg(*args, run_dir=tmp_path / "other"))
    assert fresh["total"]["requests"] == 0 and fresh["total"]["cache_hits"] > 0
    assert server.requests == []


def test_a_plan_on_an_empty_cache_uses_the_documented_approximation(compose_cfg, server):
    planned = plan(compose_cfg(*api_args(server, "anthropic")))
    text = format_plan(planned)
    assert "4 characters a token" in text and "<=" in text  # outputs at max_new_tokens
    teacher = planned["stages"]["teacher"]
    # 16 + 4 questions x 2 samples; standard once and cot twice per test question.
    assert teacher["requests"] == 40 and planned["stages"]["evaluate"]["requests"] == 24
    assert teacher["output_tokens"] == 40 * 256 and teacher["cost_usd"] > 0
    assert server.requests == []


def test_the_spend_cap_stops_before_passing_it_and_a_rerun_pays_only_the_rest(
    compose_cfg, server, tmp_path
):
    full = plan(compose_cfg(*api_args(server, "anthropic")))
    cap = 0.01  # about half what this run is billed ($0.018)
    cfg = compose_cfg(*api_args(server, "anthropic", f"large_lm.max_cost_usd={cap}"))
    with pytest.raises(SpendCapReached) as stop:
        run(cfg)
    line = str(stop.value)
    assert "\n" not in line and "spent" in line and "large_lm.max_cost_usd=" in line
    first = len(server.ok_requests())
    assert 0 < first < full["total"]["requests"]
    assert billed_usd(server) <= cap
    # Nothing half-written: the cache is sound, the stopped stage is not marked done.
    cache = Path(cfg.paths.cache_dir) / "llm_calls.sqlite"
    with sqlite3.connect(cache) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not json.loads((Path(cfg.paths.run_dir) / "teacher" / "meta.json").read_text())["done"]
    assert not (Path(cfg.paths.run_dir) / "results.json").exists()

    rest = plan(cfg)["total"]["requests"]
    assert rest == full["total"]["requests"] - first
    server.reset()
    run(compose_cfg(*api_args(server, "anthropic", "large_lm.max_cost_usd=100")))
    # Only the rest: what the first run paid for is not sent again.
    assert len(server.ok_requests()) == rest


def test_message_batches_are_checked_against_the_cap_before_submission(compose_cfg, server):
    args = api_args(server, "anthropic", "large_lm.batch_stages=[teacher]")
    args += ["large_lm.batch_poll_s=0.01", "stages=[teacher]"]
    planned = plan(compose_cfg(*args))
    teacher = planned["stages"]["teacher"]
    assert teacher["batches"] and teacher["batch_discount"] == 0.5
    cap = teacher["worst_cost_usd"] / 2
    with pytest.raises(SpendCapReached):
        run(compose_cfg(*args, f"large_lm.max_cost_usd={cap}"))
    # One batch went out, with only what fit under the cap; billed at the batch price.
    assert len(server.batches) == 1
    assert 0 < sum(server.billed.values()) < teacher["requests"]
    assert billed_usd(server, discount=0.5) <= cap


def test_results_json_breaks_the_cost_down_per_stage(compose_cfg, server):
    args = api_args(server, "anthropic", "large_lm.batch_stages=[evaluate]")
    results = run(compose_cfg(*args, "large_lm.batch_poll_s=0.01"))
    by_stage = results["llm"]["by_stage"]
    for stage in ("teacher", "evaluate"):
        s = by_stage[stage]
        assert sum(s["cost_usd_by_kind"].values()) == pytest.approx(s["cost_usd"]) and s["calls"]
        assert s["cost_usd_by_kind"]["output"] == pytest.approx(
            s["output_tokens"] * PRICE["output"] / 1e6 * (0.5 if stage == "evaluate" else 1)
        )
    assert "batch_discount" not in by_stage["teacher"]
    evaluate = by_stage["evaluate"]
    assert evaluate["batch_discount"] == 0.5 and evaluate["batch_calls"] == evaluate["calls"]
    assert evaluate["batch_saved_usd"] == pytest.approx(evaluate["cost_usd"])
    assert sum(s.get("cost_usd", 0) for s in by_stage.values()) == pytest.approx(
        results["llm"]["cost_usd"]
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["large_lm=anthropic", "large_lm.max_cost_usd=-1"], "must be >= 0"),
        (["large_lm=anthropic", "large_lm.max_cost_usd=5", "large_lm.model=x"], "no price"),
        (["large_lm=openai", "large_lm.max_cost_usd=5"], "no price for model"),
        (["large_lm.max_cost_usd=5"], "simulated backend is not billed"),
    ],
)
def test_a_cap_that_cannot_be_checked_is_refused_in_one_line(compose_cfg, overrides, expected):
    with pytest.raises(ConfigError) as err:
        check(compose_cfg(*overrides))
    assert expected in str(err.value) and "\n" not in str(err.value)


# Slow: a subprocess that imports the pipeline and plans 46,800 requests (measured 43 s wall,
# 26 s CPU, on 2 cores shared with other jobs).
@pytest.mark.e2e
@pytest.mark.slow
def test_plan_true_on_the_offline_default_writes_nothing(tmp_path):
    env = {"LMGCOT_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", "from lmgcot.cli import main; main()", "plan=true"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "plan: simulated:simulated-v2 on synthetic" in proc.stdout
    assert "teacher" in proc.stdout and "total" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # no run directory, no cache, no log


def test_a_local_backend_is_planned_in_requests_and_its_own_tokens_without_cost(
    compose_cfg, tmp_path
):
    from lmgcot.llm.tiny_models import save_tiny_seq2seq

    model = save_tiny_seq2seq(tmp_path / "tiny_seq2seq")
    cfg = compose_cfg(
        "large_lm=hf",
        f"large_lm.model={model}",
        "large_lm.device=cpu",
        "stages=[teacher]",
        "teacher.num_samples=1",
        "teacher.max_new_tokens=8",
    )
    planned = plan(cfg)
    teacher = planned["stages"]["teacher"]
    assert teacher["requests"] == 20 and teacher["cost_usd"] is None  # 16 + 4 questions, 1 sample
    assert "backend's own token count" in format_plan(planned) and "no prices" in format_plan(
        planned
    )
    # The model's own tokenizer (on disk) counted them: what the run then reads, to the token.
    results = run(cfg)
    assert teacher["input_tokens"] == results["llm"]["by_stage"]["teacher"]["input_tokens"] > 0
    assert teacher["requests"] == results["llm"]["by_stage"]["teacher"]["calls"]
