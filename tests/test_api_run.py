"""The whole pipeline through the real `lmgcot` command on `large_lm=anthropic`, against the local fake
API server (answering as the simulated large LM does): no key reaches the run directory or the cache,
bulk stages go out as Message Batches, and a second identical run makes no call at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_api_server import FakeApiServer
from test_cli import QUICK, _env, lmgcot

from lmgcot.llm.simulated import SimulatedLargeLM

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEY = "sk-ant-test-XYZ"


@pytest.fixture
def simulated_api():
    simulated = SimulatedLargeLM()
    with FakeApiServer(replier=lambda prompt: simulated.respond(prompt)) as server:
        yield server


def files_containing(root: Path, needle: str) -> list[str]:
    blob = needle.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and blob in p.read_bytes()]


def anthropic_run(root: Path, server: FakeApiServer, run: str, *extra: str):
    args = [
        *QUICK,
        "large_lm=anthropic",
        f"large_lm.base_url={server.url}",
        "large_lm.model=claude-test",
        "large_lm.batch_stages=[teacher,evaluate]",
        "large_lm.batch_poll_s=0.05",
        f"hydra.run.dir={root / run}",
        *extra,
    ]
    return lmgcot(root, *args)


def test_an_anthropic_run_leaks_no_key_batches_bulk_work_and_reruns_from_the_cache(
    tmp_path, simulated_api, monkeypatch
):
    monkeypatch.setattr("test_cli._env", lambda root: {**_env(root), "ANTHROPIC_API_KEY": KEY})
    proc = anthropic_run(tmp_path, simulated_api, "first", "logger=wandb")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "first" / "results.json").read_text())
    llm = results["llm"]
    assert llm["calls"] > 0 and llm["cost_usd"] is None  # claude-test has no price
    assert {"teacher", "refine", "evaluate"} <= set(llm["by_stage"])
    # Teacher and evaluation went out as batches, the refine rewards as plain calls.
    paths = {r.path for r in simulated_api.requests}
    assert "/v1/messages/batches" in paths and "/v1/messages" in paths
    assert results["methods"]["cot"]["em"] > 0  # the server answered as the simulated LM
    log = (tmp_path / "first" / "lmgcot.log").read_text()
    assert "large LM [teacher]:" in log
    assert "HTTP Request" not in log  # the SDK's HTTP library logs every request at INFO
    assert files_containing(tmp_path, KEY) == []
    assert list(tmp_path.rglob("wandb/offline-run-*")), "no W&B files were written"

    simulated_api.reset()
    again = anthropic_run(tmp_path, simulated_api, "second")
    assert again.returncode == 0, again.stderr[-3000:]
    assert simulated_api.requests == []
    llm2 = json.loads((tmp_path / "second" / "results.json").read_text())["llm"]
    assert llm2["calls"] == 0 and llm2["cache_hits"] > 0
    assert files_containing(tmp_path, KEY) == []


def test_a_key_put_in_the_config_stops_the_run_and_is_redacted_from_the_saved_config(tmp_path):
    proc = lmgcot(tmp_path, *QUICK, "large_lm=anthropic", f"+large_lm.api_key={KEY}")
    assert proc.returncode == 2
    assert "keys are read from the environment" in proc.stderr and KEY not in proc.stderr
    # Refused before any work: the run directory, Hydra's saved config with it, is removed, and
    # the key is in no file.
    assert list(tmp_path.rglob(".hydra/*.yaml")) == []
    assert files_containing(tmp_path, KEY) == []
