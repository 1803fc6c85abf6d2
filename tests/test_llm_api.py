"""The `anthropic` and `openai` backends, with the real SDK clients, against a local fake API server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import config_group
from fake_api_server import AUTH_MESSAGE, CREDIT_MESSAGE, FakeApiServer, reply_text
from omegaconf import OmegaConf

from lmgcot.errors import BackendError, ConfigError
from lmgcot.llm.anthropic import BATCH_DIR, AnthropicLargeLM
from lmgcot.llm.base import GenerationParams
from lmgcot.llm.cache import CallCache
from lmgcot.llm.openai import OpenAILargeLM
from lmgcot.pipeline.builders import build

pytestmark = pytest.mark.unit

KEY = "sk-ant-test-XYZ"
OPENAI_KEY = "sk-openai-test-ABC"
GREEDY = GenerationParams(max_new_tokens=16)
PROMPTS = [f"Question {i}: what is {i} plus {i}?" for i in range(12)]
BACKENDS = ["anthropic", "openai"]
PATHS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def server():
    with FakeApiServer() as s:
        yield s


def make_lm(backend: str, server: FakeApiServer, cache: CallCache | None = None, **kw):
    kw.setdefault("max_retries", 2)
    if backend == "anthropic":
        return AnthropicLargeLM("claude-test", cache=cache, base_url=server.url, **kw)
    return OpenAILargeLM("served-model", cache=cache, base_url=f"{server.url}/v1", **kw)


def expected(backend: str, prompt: str, temperature: float = 0.0, system: str = "") -> str:
    """The fake server's reply; Anthropic's current API is sent no temperature at all."""
    return reply_text(prompt, None if backend == "anthropic" else temperature, system)


def texts(results) -> list[str]:
    return [c.text for per_prompt in results for c in per_prompt]


# -- both backends --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_results_come_back_in_request_order_with_usage(backend, server):
    lm = make_lm(backend, server, max_concurrency=4)
    results = lm.generate(PROMPTS, GREEDY)
    assert texts(results) == [expected(backend, p) for p in PROMPTS]
    assert {r.path for r in server.requests} == {PATHS[backend]}
    assert len(server.requests) == len(PROMPTS)
    assert lm.usage.calls == len(PROMPTS) and lm.usage.cache_hits == 0
    assert lm.usage.input_tokens == sum(len(p.split()) for p in PROMPTS)
    assert lm.usage.output_tokens == sum(len(t.split()) for t in texts(results))
    body = server.requests[0].body
    assert body["max_tokens"] == 16 and "top_p" not in body  # top_p=1.0 is not sent
    assert body.get("temperature") == (None if backend == "anthropic" else 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_repeated_generate_is_served_from_the_cache(backend, server, tmp_path):
    cache = CallCache(tmp_path / "calls.sqlite")
    lm = make_lm(backend, server, cache=cache)
    first = lm.generate(PROMPTS[:5], GREEDY)
    sent = len(server.requests)
    assert sent == 5
    again = lm.generate(PROMPTS[:5], GREEDY)
    assert len(server.requests) == sent  # not one HTTP request
    assert texts(again) == texts(first)
    assert all(c.cached for per in again for c in per)
    assert lm.usage.calls == 5 and lm.usage.cache_hits == 5
    lm.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_401_stops_with_the_api_message_and_no_key(backend, server):
    server.fail_with = 401
    lm = make_lm(backend, server)
    with pytest.raises(BackendError) as info:
        lm.generate(PROMPTS[:3], GREEDY)
    message = str(info.value)
    assert AUTH_MESSAGE in message and "401" in message and "\n" not in message
    assert KEY not in message and "EMPTY" not in message
    # Retrying cannot fix a bad key: each request was sent once.
    assert len(server.requests) <= 3
    assert lm.usage.calls == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_transient_faults_are_retried_by_the_sdk(backend, server, tmp_path):
    server.transient_rate = 0.3
    server.retry_after_ms = 1
    cache = CallCache(tmp_path / "calls.sqlite")
    lm = make_lm(backend, server, cache=cache, max_concurrency=8, max_retries=2)
    prompts = [f"flaky prompt number {i}" for i in range(24)]
    results = lm.generate(prompts, GREEDY)
    assert texts(results) == [expected(backend, p) for p in prompts]
    faults = [r for r in server.requests if r.status != 200]
    assert faults, "the fault injection did not hit any request"
    assert {r.status for r in faults} <= {429, 500, 529}
    # Every prompt was answered once and stored once.
    answered = [json.dumps(r.body, sort_keys=True) for r in server.ok_requests()]
    assert len(answered) == len(set(answered)) == len(prompts)
    assert len(cache) == len(prompts)
    assert lm.usage.calls == len(prompts)
    lm.close()


# -- anthropic ------------------------------------------------------------------------------


def test_anthropic_requests_carry_the_key_version_and_settings(server, caplog):
    lm = make_lm("anthropic", server, system="Be brief.")
    params = GenerationParams(max_new_tokens=7, temperature=0.5, top_p=0.9, stop=("\n\n",))
    [[c]] = lm.generate(["hello there"], params)
    assert c.text == reply_text("hello there", system="Be brief.")
    [req] = server.requests
    # SDK 2.x sends the API key as a bearer token.
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers.get("anthropic-version")
    # No temperature/top_p: the API version the SDK speaks refuses them (see the module docstring).
    assert req.body == {
        "model": "claude-test",
        "max_tokens": 7,
        "messages": [{"role": "user", "content": "hello there"}],
        "stop_sequences": ["\n\n"],
        "system": "Be brief.",
    }
    assert "takes no temperature" in caplog.text and KEY not in caplog.text
    # A request's own system prompt wins over the backend's default.
    lm.generate(["hello there"], GenerationParams(system="Answer in French."))
    assert server.requests[-1].body["system"] == "Answer in French."


def test_samples_at_temperature_are_distinct_requests(server, tmp_path):
    lm = make_lm("anthropic", server, cache=CallCache(tmp_path / "calls.sqlite"))
    params = GenerationParams(max_new_tokens=16, temperature=0.7)
    [samples] = lm.generate(["tell me a story"], params, n=3)
    assert len(server.requests) == 3
    assert len({c.text for c in samples}) == 3
    assert lm.usage.calls == 3
    lm.generate(["tell me a story"], params, n=3)
    assert len(server.requests) == 3 and lm.usage.cache_hits == 3


def test_a_low_credit_balance_stops_with_the_api_message(server):
    server.fail_with = "credit"
    lm = make_lm("anthropic", server)
    with pytest.raises(BackendError, match="credit balance is too low") as info:
        lm.generate(["hi"], GREEDY)
    assert CREDIT_MESSAGE in str(info.value) and "\n" not in str(info.value)
    assert len(server.requests) == 1  # a 400 is not retried


def test_errors_left_after_the_sdk_retries_become_a_backend_error(server):
    server.fail_with = 529
    lm = make_lm("anthropic", server, max_retries=1)
    with pytest.raises(BackendError, match="HTTP 529 after 1 retries"):
        lm.generate(["hi"], GREEDY)
    assert len(server.requests) == 2  # the first attempt and one retry


@pytest.mark.parametrize("value", [None, "", "  "])
def test_a_missing_anthropic_key_fails_at_construction(monkeypatch, server, value):
    if value is None:
        monkeypatch.delenv("ANTHROPIC_API_KEY")
    else:
        monkeypatch.setenv("ANTHROPIC_API_KEY", value)
    with pytest.raises(BackendError, match="set ANTHROPIC_API_KEY"):
        make_lm("anthropic", server)
    assert server.requests == []


def test_concurrent_calls_overlap_up_to_the_limit(server):
    # Counted at the server, not timed (the speed-up itself is benchmarks/api_concurrency.py's):
    # each request waits there until `concurrency` of them are in flight together, so the count
    # is reached however busy the machine, and only the client's limit keeps it from going above
    # (the reply time gives a client past its limit the time to show it).
    server.latency_s = 0.2
    in_flight = {}
    for concurrency, n in ((1, 4), (16, 32)):
        server.reset()
        server.release.clear()
        server.open_at_in_flight = concurrency
        prompts = [f"slow prompt {i}" for i in range(n)]
        lm = make_lm("anthropic", server, max_concurrency=concurrency, batch_size=64)
        results = lm.generate(prompts, GREEDY)
        assert texts(results) == [expected("anthropic", p) for p in prompts]
        in_flight[concurrency] = server.max_in_flight
    assert in_flight == {1: 1, 16: 16}


def test_cost_accumulates_over_fresh_calls_from_the_price_table(server, tmp_path):
    prices = {"claude-test": {"input": 3.0, "output": 15.0}}
    lm = make_lm("anthropic", server, cache=CallCache(tmp_path / "c.sqlite"), prices=prices)
    assert lm.cost_usd == 0.0
    lm.generate(PROMPTS[:4], GREEDY)
    expected = (lm.usage.input_tokens * 3.0 + lm.usage.output_tokens * 15.0) / 1e6
    assert lm.cost_usd == pytest.approx(expected) and expected > 0
    assert lm.usage.as_dict()["cost_usd"] == pytest.approx(expected)
    assert lm.usage.by_stage["default"]["cost_usd"] == pytest.approx(expected)
    lm.generate(PROMPTS[:4], GREEDY)  # cache hits cost nothing
    assert lm.cost_usd == pytest.approx(expected)
    lm.generate(PROMPTS[4:6], GREEDY)
    assert lm.cost_usd > expected
    unpriced = make_lm("anthropic", server, prices={"other-model": {"input": 1, "output": 1}})
    unpriced.generate(["hi"], GREEDY)
    assert unpriced.cost_usd is None and unpriced.usage.cost_usd is None


def test_a_malformed_price_table_is_a_config_error(server):
    with pytest.raises(ConfigError, match="prices.claude-test"):
        make_lm("anthropic", server, prices={"claude-test": {"input": 3.0}})


# -- openai ---------------------------------------------------------------------------------


def test_openai_sends_empty_key_when_unset_and_the_env_key_when_set(server, monkeypatch):
    lm = make_lm("openai", server, system="Be brief.")
    lm.generate(["hello"], GenerationParams(max_new_tokens=5, stop=("END",)))
    [req] = server.requests
    assert req.headers["authorization"] == "Bearer EMPTY"
    assert req.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]
    assert req.body["stop"] == ["END"] and req.body["max_tokens"] == 5
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    make_lm("openai", server).generate(["hello again"], GREEDY)
    assert server.requests[-1].headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_openai_needs_a_base_url():
    with pytest.raises(ConfigError, match="base_url"):
        OpenAILargeLM("m", base_url=None)


# -- configs --------------------------------------------------------------------------------


@pytest.mark.parametrize("option", BACKENDS)
def test_the_config_files_build_a_working_backend(option, server):
    node = OmegaConf.create(config_group("large_lm", option))
    assert "key" not in " ".join(str(k).lower() for k in node)
    url = server.url if option == "anthropic" else f"{server.url}/v1"
    lm = build(node, "large_lm", cache=None, base_url=url)
    assert lm.backend == option and lm.max_concurrency == node.max_concurrency
    [[c]] = lm.generate(["hi"], GREEDY)
    assert c.text == expected(option, "hi")
    if option == "anthropic":
        assert lm.model in lm.prices and lm.cost_usd is not None and lm.cost_usd > 0


def test_an_unreachable_server_is_a_backend_error():
    with FakeApiServer() as gone:
        url = gone.url
    lm = AnthropicLargeLM("claude-test", base_url=url, max_retries=0, timeout_s=5)
    with pytest.raises(BackendError, match="APIConnectionError after 0 retries"):
        lm.generate(["hi"], GREEDY)


# -- prompt caching -------------------------------------------------------------------------

EXEMPLARS = "".join(f"Example {i}: a worked question and its answer.\n" for i in range(40))


def test_a_long_shared_prefix_is_sent_with_a_cache_breakpoint(server):
    prices = {"claude-test": {"input": 3.0, "output": 15.0}}
    lm = make_lm("anthropic", server, max_concurrency=1, prompt_cache_min_tokens=50, prices=prices)
    prompts = [f"{EXEMPLARS}Question: what is {i} times 3?" for i in range(4)]
    results = lm.generate(prompts, GREEDY)
    assert texts(results) == [expected("anthropic", p) for p in prompts]
    for req, prompt in zip(server.requests, prompts):
        blocks = req.body["messages"][0]["content"]
        assert blocks[0] == {
            "type": "text",
            "text": EXEMPLARS,
            "cache_control": {"type": "ephemeral"},
        }
        assert "cache_control" not in blocks[1]
        assert "".join(b["text"] for b in blocks) == prompt
    n_prefix = len(EXEMPLARS.split())
    # Concurrency 1: the first call writes the prefix, the three after it read it.
    assert lm.usage.cache_write_tokens == n_prefix
    assert lm.usage.cache_read_tokens == 3 * n_prefix
    assert lm.usage.by_stage["default"]["cache_read_tokens"] == 3 * n_prefix
    # Writes at 1.25x and reads at 0.1x the input price (the defaults of a price entry).
    u = lm.usage
    cost = (u.input_tokens * 3 + u.output_tokens * 15 + n_prefix * 3.75 + 3 * n_prefix * 0.3) / 1e6
    assert lm.cost_usd == pytest.approx(cost)


def test_short_or_unshared_prompts_are_sent_as_plain_text(server):
    lm = make_lm("anthropic", server, prompt_cache_min_tokens=50)
    lm.generate(
        [f"{EXEMPLARS}Question {i}" for i in range(2)][:1], GREEDY
    )  # one prompt: nothing shared
    lm.generate([f"short shared\nQuestion {i}" for i in range(3)], GREEDY)  # shared, too short
    off = make_lm("anthropic", server, prompt_caching=False, prompt_cache_min_tokens=50)
    off.generate([f"{EXEMPLARS}Question {i}" for i in range(3)], GREEDY)
    assert all(isinstance(r.body["messages"][0]["content"], str) for r in server.requests)
    assert lm.usage.cache_read_tokens == lm.usage.cache_write_tokens == 0


# -- Message Batches ------------------------------------------------------------------------


def batch_lm(server, cache, **kw):
    lm = make_lm(
        "anthropic", server, cache=cache, batch_stages=["teacher"], batch_poll_s=0.02, **kw
    )
    lm.set_stage("teacher")
    return lm


def batch_paths(server) -> list[str]:
    return [r.path for r in server.requests if r.path.startswith("/v1/messages/batches")]


def test_a_batch_stage_sends_one_batch_and_matches_unordered_results(server, tmp_path):
    prices = {"claude-test": {"input": 3.0, "output": 15.0}}
    cache = CallCache(tmp_path / "calls.sqlite")
    lm = batch_lm(server, cache, prices=prices)
    prompts = [f"bulk question {i}" for i in range(20)]
    results = lm.generate(prompts, GREEDY)
    assert texts(results) == [expected("anthropic", p) for p in prompts]
    assert len(server.batches) == 1
    assert not any(r.path == "/v1/messages" for r in server.requests)
    [batch] = server.batches.values()
    [create] = [r for r in server.requests if r.path == "/v1/messages/batches"]
    sent = [item["custom_id"] for item in create.body["requests"]]
    returned = [row["custom_id"] for row in batch["results"]]
    assert sorted(sent) == sorted(returned) and sent != returned  # came back in another order
    assert lm.usage.calls == 20 and len(cache) == 20
    # Half price, and the record of the batch is gone once its results are stored.
    full = (lm.usage.input_tokens * 3 + lm.usage.output_tokens * 15) / 1e6
    assert lm.cost_usd == pytest.approx(0.5 * full)
    assert list((tmp_path / BATCH_DIR).glob("*.json")) == []
    # Another stage is not batched; a second identical run makes no request at all.
    server.reset()
    again = lm.generate(prompts, GREEDY)
    assert texts(again) == texts(results) and server.requests == []
    lm.set_stage("evaluate")
    lm.generate(["not a bulk question"], GREEDY)
    assert [r.path for r in server.requests] == ["/v1/messages"]
    lm.close()


def test_failed_batch_requests_are_sent_again_and_paid_once(server, tmp_path):
    server.batch_fault_rate = 0.3
    cache = CallCache(tmp_path / "calls.sqlite")
    lm = batch_lm(server, cache)
    prompts = [f"sometimes failing question {i}" for i in range(30)]
    results = lm.generate(prompts, GREEDY)
    assert texts(results) == [expected("anthropic", p) for p in prompts]
    assert len(server.batches) == 2  # the first, then one with the errored and expired requests
    second = list(server.batches.values())[1]
    assert 0 < len(second["results"]) < len(prompts)
    assert sorted(server.billed.values()) == [1] * len(prompts)
    assert len(cache) == len(prompts)
    lm.close()


def test_requests_still_failing_after_the_batch_retries_are_reported(server, tmp_path):
    server.batch_fault_rate = 0.3
    cache = CallCache(tmp_path / "calls.sqlite")
    lm = batch_lm(server, cache, batch_retries=0)
    prompts = [f"sometimes failing question {i}" for i in range(30)]
    with pytest.raises(BackendError, match=r"of 30 batch requests failed after 0 retries; first: "):
        lm.generate(prompts, GREEDY)
    assert len(server.batches) == 1
    assert 0 < len(cache) < 30  # the successful ones were kept
    lm.close()


def test_an_invalid_batch_request_stops_the_run_but_keeps_the_paid_results(server, tmp_path):
    server.invalid_marker = "FORBIDDEN"
    cache = CallCache(tmp_path / "calls.sqlite")
    lm = batch_lm(server, cache)
    prompts = [f"question {i}" for i in range(6)] + ["a FORBIDDEN question"]
    with pytest.raises(BackendError, match="invalid_request_error: prompt is not allowed") as info:
        lm.generate(prompts, GREEDY)
    assert "\n" not in str(info.value)
    assert len(server.batches) == 1  # not retried: it cannot succeed
    server.reset()
    lm.generate(prompts[:6], GREEDY)
    assert server.requests == []  # the six good answers were stored before stopping
    lm.close()


CHILD = """
import sys
from lmgcot.llm.anthropic import AnthropicLargeLM
from lmgcot.llm.base import GenerationParams
from lmgcot.llm.cache import CallCache
url, cache_path = sys.argv[1:3]
lm = AnthropicLargeLM("claude-test", cache=CallCache(cache_path), base_url=url,
                      batch_stages=["teacher"], batch_poll_s=0.05)
lm.set_stage("teacher")
lm.generate([f"long job question {i}" for i in range(25)], GenerationParams(max_new_tokens=16))
"""


def test_a_batch_run_killed_while_waiting_resumes_the_recorded_batch(server, tmp_path):
    server.batch_delay_s = 3600  # the batch will not end while the first process waits
    cache_path = tmp_path / "calls.sqlite"
    env = {**os.environ, "ANTHROPIC_API_KEY": KEY}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, server.url, str(cache_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # The deadline only bounds a hang (a loaded machine can take a minute to import torch).
    deadline = time.monotonic() + 300
    records: list[Path] = []
    while not records and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        records = list((tmp_path / BATCH_DIR).glob("*.json"))
    # Killed before its stderr is read: a live child that polls forever never closes the pipe.
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert records, f"no batch was recorded: {proc.stderr.read().decode()}"
    assert len(server.batches) == 1 and server.billed  # submitted (and paid) before the kill
    server.batch_delay_s = 0.0  # the batch ends now
    lm = batch_lm(server, CallCache(cache_path))
    prompts = [f"long job question {i}" for i in range(25)]
    results = lm.generate(prompts, GREEDY)
    assert texts(results) == [expected("anthropic", p) for p in prompts]
    assert len(server.batches) == 1  # polled the recorded batch, created none
    assert sorted(server.billed.values()) == [1] * len(prompts)
    assert list((tmp_path / BATCH_DIR).glob("*.json")) == []
    lm.close()


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"batch_stages": ["refine"]}, "refine cannot use Message Batches"),
        ({"batch_max_requests": 0}, "batch_max_requests"),
        ({"batch_discount": 2}, "batch_discount"),
        ({"api_key": KEY}, "keys are read from the environment"),
    ],
)
def test_bad_batch_settings_and_a_key_in_the_config_are_config_errors(server, setting, message):
    with pytest.raises(ConfigError, match=message) as info:
        make_lm("anthropic", server, **setting)
    assert KEY not in str(info.value)
