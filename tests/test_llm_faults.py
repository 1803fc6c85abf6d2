"""Never pay twice, never lose a paid reply: each API reply is stored as it arrives, a request that
fails for good does not stop its siblings, retries back off and honour retry-after, a corrupt cache
file is named."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import cache_rows, config_group
from fake_api_server import FakeApiServer
from omegaconf import OmegaConf

from lmgcot.errors import BackendError
from lmgcot.llm.anthropic import AnthropicLargeLM
from lmgcot.llm.base import GenerationParams
from lmgcot.llm.cache import CacheCorrupt, CallCache
from lmgcot.llm.openai import OpenAILargeLM
from lmgcot.llm.retry import MAX_RETRY_AFTER_S, RetryPolicy, is_fatal, is_retryable
from lmgcot.pipeline.builders import build

pytestmark = pytest.mark.unit

GREEDY = GenerationParams(max_new_tokens=16)
FAST = {"retry_base_s": 0.001, "retry_max_s": 0.01}


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


@pytest.fixture
def server():
    with FakeApiServer() as s:
        yield s


def make_lm(backend, server, cache=None, **kw):
    kw = {**FAST, **kw}
    if backend == "anthropic":
        return AnthropicLargeLM("claude-test", cache=cache, base_url=server.url, **kw)
    return OpenAILargeLM("served", cache=cache, base_url=f"{server.url}/v1", **kw)


def ok_bodies(server) -> list[str]:
    return [json.dumps(r.body, sort_keys=True) for r in server.ok_requests()]


@pytest.mark.parametrize("backend", ["anthropic", "openai"])
def test_30_percent_faults_pass_with_the_default_retries_and_each_reply_is_paid_once(
    backend, server, tmp_path
):
    server.fault_rate = 0.3
    cache = CallCache(tmp_path / "calls.sqlite")
    lm = make_lm(backend, server, cache=cache)
    prompts = [f"flaky question {i}" for i in range(80)]
    lm.generate(prompts, GREEDY)
    assert any(r.status != 200 for r in server.requests)
    assert len(ok_bodies(server)) == len(set(ok_bodies(server))) == len(prompts)
    assert len(cache) == lm.usage.calls == len(prompts)


def test_the_default_retry_budget_survives_30_percent_faults_over_10000_requests():
    default = config_group("large_lm", "anthropic")["max_retries"]
    assert default == config_group("large_lm", "openai")["max_retries"] >= 12
    assert RetryPolicy().max_retries == default
    # P(some request of 10,000 fails) when each attempt fails with probability 0.3.
    assert 10_000 * 0.3 ** (default + 1) < 0.01


def test_the_retry_settings_come_from_the_config(server):
    overrides = ("large_lm.max_retries=3", "large_lm.retry_base_s=0.001")
    node = OmegaConf.create(config_group("large_lm", "openai", *overrides))
    lm = build(node, "large_lm", cache=None, base_url=f"{server.url}/v1")
    assert lm.retry == RetryPolicy(max_retries=3, base_s=0.001, max_s=60.0)


@pytest.mark.parametrize("status", [400, 500])
def test_a_request_failing_for_good_leaves_its_siblings_stored_and_a_rerun_pays_only_it(
    status, server, tmp_path
):
    server.failing_rate, server.failing_status = 0.2, status
    cache = CallCache(tmp_path / "calls.sqlite")
    lm = make_lm("anthropic", server, cache=cache, max_retries=2, batch_size=8)
    prompts = [f"question {i}" for i in range(40)]
    with pytest.raises(BackendError) as info:
        lm.generate(prompts, GREEDY)
    n_failed = len(prompts) - len(cache)
    assert 0 < n_failed < len(prompts) // 2
    message = str(info.value)
    assert "\n" not in message
    assert f"{n_failed} of {len(prompts)} requests failed" in message
    assert f"injected permanent {status}" in message
    # A 400 is not retried; a 500 is, until the retries are spent.
    tries = 1 if status == 400 else 3
    assert len(server.requests) == len(prompts) - n_failed + n_failed * tries
    server.reset()
    with pytest.raises(BackendError):
        lm.generate(prompts, GREEDY)
    assert len({json.dumps(r.body, sort_keys=True) for r in server.requests}) == n_failed
    assert server.ok_requests() == []


def test_when_every_first_request_fails_the_rest_are_not_sent(server, tmp_path):
    server.failing_rate = 1.0
    lm = make_lm("anthropic", server, cache=CallCache(tmp_path / "c.sqlite"), batch_size=4)
    with pytest.raises(BackendError, match="4 of 12 requests failed, 8 not sent"):
        lm.generate([f"q {i}" for i in range(12)], GREEDY)
    assert len(server.requests) == 4


def test_a_bad_key_stops_every_request_at_once(server):
    server.fail_with = 401
    lm = make_lm("anthropic", server, max_concurrency=2, batch_size=4)
    with pytest.raises(BackendError, match="authentication failed"):
        lm.generate([f"q {i}" for i in range(12)], GREEDY)
    assert len(server.requests) <= 2


CHILD = """
import sys
from lmgcot.llm.anthropic import AnthropicLargeLM
from lmgcot.llm.base import GenerationParams
from lmgcot.llm.cache import CallCache
url, cache_path = sys.argv[1:3]
lm = AnthropicLargeLM("claude-test", cache=CallCache(cache_path), base_url=url,
                      max_concurrency=4, batch_size=64)
lm.generate([f"long job question {i}" for i in range(60)], GenerationParams(max_new_tokens=16))
"""


def test_a_kill_loses_no_reply_that_arrived(server, tmp_path):
    # The server answers 12 requests and holds every later one: the kill comes in mid-chunk,
    # after exactly 12 replies were paid for.
    server.hold_after = 12
    path = tmp_path / "calls.sqlite"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, server.url, str(path)], env=env)
    # The 12 replies reach the cache while the rest of the chunk is still waiting: each reply is
    # stored as it arrives. (The deadline only bounds the hang of a client that stored whole
    # chunks; a loaded machine can take a minute to start the child.)
    deadline = time.monotonic() + 300
    try:
        while cache_rows(path) < 12:
            assert child.poll() is None, "the child ended before the kill"
            assert time.monotonic() < deadline, f"{cache_rows(path)} of 12 paid replies stored"
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    paid = set(server.paid)
    assert len(paid) == 12
    cache = CallCache(path)
    assert cache.check() == "ok"
    assert len(cache) == len(paid)  # every reply sent before the kill is stored
    server.hold_after = None
    server.reset()
    lm = AnthropicLargeLM("claude-test", cache=cache, base_url=server.url)
    lm.generate([f"long job question {i}" for i in range(60)], GREEDY)
    assert lm.usage.calls == 60 - len(paid)  # the rerun pays only for the rest


def test_backoff_doubles_with_jitter_up_to_the_cap_and_honours_retry_after():
    policy = RetryPolicy(max_retries=5, base_s=1.0, max_s=8.0)
    for retry, top in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 8.0)]:
        waits = [policy.backoff(retry) for _ in range(50)]
        assert all(top / 2 <= w <= top for w in waits) and len(set(waits)) > 1

    def err(headers):
        return SimpleNamespace(response=SimpleNamespace(headers=headers))

    assert policy.backoff(0, err({"retry-after": "30"})) == 30.0
    assert policy.backoff(0, err({"retry-after-ms": "250"})) == 0.25
    assert policy.backoff(0, err({"retry-after": "86400"})) == MAX_RETRY_AFTER_S


@pytest.mark.parametrize(
    ("status", "message", "fatal", "retryable"),
    [
        (401, "invalid x-api-key", True, False),
        (403, "forbidden", True, False),
        (400, "Your credit balance is too low", True, False),
        (400, "You have reached your spend limit", True, False),
        (400, "prompt is too long", False, False),
        (429, "rate limited", False, True),
        (529, "overloaded", False, True),
        (None, "connection refused", False, True),
    ],
)
def test_errors_are_sorted_into_fatal_failed_and_retried(status, message, fatal, retryable):
    err = SimpleNamespace(status_code=status, body={"error": {"message": message}})
    assert is_fatal(err) == fatal
    assert is_retryable(err) == retryable


def test_a_corrupt_cache_file_is_named_with_what_to_do(tmp_path):
    path = tmp_path / "calls.sqlite"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(CacheCorrupt) as info:
        CallCache(path)
    message = str(info.value)
    assert str(path) in message and "mv " in message and "\n" not in message
    assert isinstance(info.value, BackendError)


def test_a_cache_damaged_inside_is_named_when_read(tmp_path):
    path = tmp_path / "calls.sqlite"
    cache = CallCache(path)
    cache.put_many([(f"k{i}", {"text": "x" * 200}) for i in range(3000)])
    cache._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache.close()
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(os.urandom(32768))
    cache = CallCache(path)
    assert cache.check() != "ok"
    with pytest.raises(CacheCorrupt, match="mv "):
        cache.get_many([f"k{i}" for i in range(3000)])


def test_a_cache_file_deleted_between_runs_is_a_fresh_cache(server, tmp_path):
    path = tmp_path / "cache" / "calls.sqlite"
    lm = make_lm("anthropic", server, cache=CallCache(path))
    lm.generate(["a", "b"], GREEDY)
    lm.close()
    for p in path.parent.iterdir():
        p.unlink()
    path.parent.rmdir()
    lm = make_lm("anthropic", server, cache=CallCache(path))
    lm.generate(["a", "b"], GREEDY)
    assert lm.usage.calls == 2 and len(lm.cache) == 2
