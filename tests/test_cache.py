"""The persistent large-LM call cache: hits, keys, usage, crash and concurrency safety."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import cache_rows

from lmgcot.errors import BackendError
from lmgcot.llm.base import Completion, GenerationParams, LargeLM, Request
from lmgcot.llm.cache import CallCache

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[1]


class EchoLM(LargeLM):
    """A real, deterministic backend: the completion spells out prompt, temperature and sample."""

    backend = "echo"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.served = 0  # requests that actually reached the backend

    def _complete(self, requests: list[Request]) -> list[Completion]:
        self.served += len(requests)
        out = []
        for r in requests:
            text = f"{r.prompt} | t={r.params.temperature} | i={r.sample_index}"
            out.append(Completion(text, len(r.prompt.split()), len(text.split())))
        return out


class OtherEchoLM(EchoLM):
    backend = "echo2"


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "calls.sqlite"


def test_repeat_call_is_served_from_cache(cache_path: Path) -> None:
    lm = EchoLM("m", cache=CallCache(cache_path))
    params = GenerationParams()
    first = lm.generate(["q1", "q2"], params)
    assert lm.served == 2
    assert not any(c.cached for row in first for c in row)

    again = lm.generate(["q1", "q2"], params)
    assert lm.served == 2
    assert lm.usage.calls == 2
    assert lm.usage.cache_hits == 2
    assert [c.text for row in again for c in row] == [c.text for row in first for c in row]
    assert all(c.cached for row in again for c in row)
    lm.close()

    # A fresh instance on the same file (as a new process would open it) hits as well.
    lm2 = EchoLM("m", cache=CallCache(cache_path))
    third = lm2.generate(["q1", "q2"], params)
    assert lm2.served == 0
    assert lm2.usage.calls == 0
    assert lm2.usage.cache_hits == 2
    assert [c.text for row in third for c in row] == [c.text for row in first for c in row]
    # Token counts of the original call are stored too.
    assert third[0][0].input_tokens == 1
    lm2.close()


def test_without_cache_every_call_reaches_backend() -> None:
    lm = EchoLM("m", cache=None)
    lm.generate(["q"], GenerationParams())
    lm.generate(["q"], GenerationParams())
    assert lm.served == 2
    assert lm.usage.cache_hits == 0


def test_samples_are_distinct_calls(cache_path: Path) -> None:
    cache = CallCache(cache_path)
    lm = EchoLM("m", cache=cache)
    params = GenerationParams(temperature=0.7)
    out = lm.generate(["q"], params, n=3)
    assert lm.served == 3
    assert len({c.text for c in out[0]}) == 3
    assert len(cache) == 3
    keys = {lm._key(Request("q", params, i)) for i in range(3)}
    assert len(keys) == 3

    lm.generate(["q"], params, n=3)
    assert lm.served == 3
    assert lm.usage.cache_hits == 3
    # Asking for more samples only pays for the new ones.
    lm.generate(["q"], params, n=5)
    assert lm.served == 5
    assert len(cache) == 5
    lm.close()


_BASE = GenerationParams(max_new_tokens=64, temperature=0.7, top_p=0.9, stop=("\n",), system="s")


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.8},
        {"top_p": 0.95},
        {"max_new_tokens": 65},
        {"system": "other"},
        {"system": None},
        {"stop": ("\n\n",)},
        {"stop": ()},
        {"model": "m2"},
        {"backend": "echo2"},
        {"sample_index": 1},
        {"prompt": "q "},
    ],
    ids=lambda c: next(iter(c)) + "=" + repr(next(iter(c.values()))),
)
def test_every_setting_is_part_of_the_key(change: dict) -> None:
    def key(
        model: str = "m",
        backend: str = "echo",
        sample_index: int = 0,
        prompt: str = "q",
        **param_changes,
    ) -> str:
        cls = OtherEchoLM if backend == "echo2" else EchoLM
        lm = cls(model, cache=None)
        return lm._key(Request(prompt, replace(_BASE, **param_changes), sample_index))

    assert key() == key()  # the key is stable
    assert key(**change) != key()


def test_changed_setting_misses_the_cache(cache_path: Path) -> None:
    cache = CallCache(cache_path)
    lm = EchoLM("m", cache=cache)
    lm.generate(["q"], _BASE)
    lm.generate(["q"], replace(_BASE, top_p=0.5))
    EchoLM("m2", cache=cache).generate(["q"], _BASE)
    OtherEchoLM("m", cache=cache).generate(["q"], _BASE)
    assert lm.served == 2
    assert len(cache) == 4
    cache.close()


def test_usage_accounting_by_stage(cache_path: Path) -> None:
    lm = EchoLM("m", cache=CallCache(cache_path), batch_size=2)
    lm.set_stage("rationale")
    # Prompts of 2 and 3 words; completions "<prompt> | t=0.0 | i=0" add 4 words each.
    lm.generate(["a b", "c d e"], GenerationParams())
    lm.set_stage("answer")
    lm.generate(["a b", "f"], GenerationParams())  # "a b" is a hit, "f" is fresh
    lm.set_stage("again")
    lm.generate(["a b", "f"], GenerationParams())  # hits only

    u = lm.usage
    assert (u.calls, u.cache_hits) == (3, 3)
    assert u.input_tokens == 2 + 3 + 1
    assert u.output_tokens == (2 + 4) + (3 + 4) + (1 + 4)
    rationale, answer = u.by_stage["rationale"], u.by_stage["answer"]
    # Time is counted where calls were sent, none where every request was a hit, and the total
    # is the stages' sum.
    assert rationale["seconds"] > 0 and answer["seconds"] > 0
    assert u.by_stage.get("again", {}).get("seconds", 0.0) == 0.0
    assert u.seconds == pytest.approx(rationale["seconds"] + answer["seconds"], rel=1e-12)
    assert (rationale["calls"], rationale["cache_hits"]) == (2, 0)
    assert (rationale["input_tokens"], rationale["output_tokens"]) == (5, 13)
    assert (answer["calls"], answer["cache_hits"]) == (1, 1)
    # Hits cost nothing: only "f" is counted.
    assert (answer["input_tokens"], answer["output_tokens"]) == (1, 5)
    assert set(u.as_dict()) >= {"calls", "cache_hits", "input_tokens", "output_tokens", "by_stage"}
    lm.close()


def test_backend_returning_wrong_count_is_an_error(cache_path: Path) -> None:
    class ShortLM(EchoLM):
        def _complete(self, requests: list[Request]) -> list[Completion]:
            return super()._complete(requests)[:-1]

    lm = ShortLM("m", cache=CallCache(cache_path))
    with pytest.raises(RuntimeError, match="returned 1 completions for 2"):
        lm.generate(["a", "b"], GenerationParams())
    lm.close()


# A writer that never stops on its own: batches of 50 rows, each batch one transaction.
_ENDLESS_WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from lmgcot.llm.cache import CallCache
    cache = CallCache({path!r})
    batch = 0
    while True:
        cache.put_many(
            (f"k{{batch}}-{{j}}", {{"text": "x" * 200, "input_tokens": j, "output_tokens": batch}})
            for j in range(50)
        )
        batch += 1
    """
)


def test_killed_writer_leaves_a_sound_file(cache_path: Path) -> None:
    script = _ENDLESS_WRITER.format(root=str(REPO_ROOT), path=str(cache_path))
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while cache_rows(cache_path) < 500:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "writer made no progress"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # Open the file as the next run would: WAL recovery must leave whole batches only.
    cache = CallCache(cache_path)
    conn = sqlite3.connect(str(cache_path))
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = conn.execute("SELECT key, value FROM calls").fetchall()
    assert len(rows) >= 500
    assert len(rows) % 50 == 0  # one transaction per batch: no half batch survives
    for _key, value in rows:
        assert json.loads(value)["text"].startswith("x")
    conn.close()

    # A new writer continues on the same file.
    before = len(cache)
    cache.put_many([("after-kill", {"text": "ok", "input_tokens": 0, "output_tokens": 0})])
    assert len(cache) == before + 1
    assert cache.get("after-kill") == {"text": "ok", "input_tokens": 0, "output_tokens": 0}
    cache.close()


def release_when_ready(procs: list[subprocess.Popen], ready: Path, go: Path) -> None:
    """Create `go` once every process has left a file in `ready` (it is then in its wait loop).

    The deadline only bounds a hang: a child that dies first fails the test with its stderr.
    """
    deadline = time.monotonic() + 120
    while len(list(ready.iterdir())) < len(procs):
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"a child exited before the start signal: {proc.stderr.read()}")
        assert time.monotonic() < deadline, "the children never reached their wait loops"
        time.sleep(0.01)
    go.touch()


# Writes keys [lo, hi) in batches of 10 after a shared start signal, to maximise overlap in time.
_RANGE_WRITER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {root!r})
    from lmgcot.llm.cache import CallCache
    lo, hi, tag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    open(os.path.join({ready!r}, tag), "w").close()
    while not os.path.exists({go!r}):
        time.sleep(0.001)
    cache = CallCache({path!r})
    for start in range(lo, hi, 10):
        cache.put_many(
            (f"key-{{i}}", {{"text": tag, "input_tokens": i, "output_tokens": 0}})
            for i in range(start, min(start + 10, hi))
        )
    cache.close()
    """
)


def test_concurrent_writers_with_overlapping_keys(tmp_path: Path, cache_path: Path) -> None:
    go, ready = tmp_path / "go", tmp_path / "ready"
    ready.mkdir()
    script = _RANGE_WRITER.format(
        root=str(REPO_ROOT), path=str(cache_path), go=str(go), ready=str(ready)
    )
    ranges = [(0, 300, "A"), (150, 450, "B"), (100, 200, "C")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(lo), str(hi), tag],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for lo, hi, tag in ranges
    ]
    # Release them together once every interpreter is in its wait loop; they also race on
    # creating the file, switching it to WAL and creating the table.
    release_when_ready(procs, ready, go)
    for proc in procs:
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
        assert err.decode() == ""

    conn = sqlite3.connect(str(cache_path))
    keys = [k for (k,) in conn.execute("SELECT key FROM calls")]
    conn.close()
    assert len(keys) == len(set(keys))
    assert set(keys) == {f"key-{i}" for i in range(450)}

    cache = CallCache(cache_path)
    got = cache.get_many([f"key-{i}" for i in range(450)])
    assert len(got) == 450
    # First writer wins per key; every stored value belongs to a writer that covered that key.
    for i in range(450):
        owners = {tag for lo, hi, tag in ranges if lo <= i < hi}
        assert got[f"key-{i}"]["text"] in owners
        assert got[f"key-{i}"]["input_tokens"] == i
    cache.close()


def test_identical_requests_in_one_call_are_served_once(tmp_path):
    lm = EchoLM("echo-model", cache=CallCache(tmp_path / "c.sqlite"))
    params = GenerationParams(temperature=0.0)
    out = lm.generate(["same", "same", "other", "same"], params)
    assert [o[0].text for o in out][:2] == [out[0][0].text] * 2
    assert lm.usage.calls == 2 and lm.usage.cache_hits == 2
    assert lm.served == 2


# Completes prompts [lo, hi) through a slow backend after a shared start signal; prints its fresh calls.
_SLOW_JOB = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    from test_cache import EchoLM
    from lmgcot.llm.base import GenerationParams
    from lmgcot.llm.cache import CallCache

    class SlowLM(EchoLM):
        def _complete(self, requests):
            time.sleep(0.05)
            return super()._complete(requests)

    lo, hi = int(sys.argv[1]), int(sys.argv[2])
    open(os.path.join({ready!r}, sys.argv[3]), "w").close()
    while not os.path.exists({go!r}):
        time.sleep(0.001)
    lm = SlowLM("echo-model", cache=CallCache({path!r}), batch_size=10)
    prompts = [f"prompt {{i}}" for i in range(lo, hi)]
    out = lm.generate(prompts, GenerationParams())
    assert [c[0].text.split(" | ")[0] for c in out] == prompts
    print(lm.usage.calls, lm.usage.cache_hits)
    """
)


def test_parallel_jobs_wait_for_each_others_calls_instead_of_paying_twice(tmp_path, cache_path):
    go, ready = tmp_path / "go", tmp_path / "ready"
    ready.mkdir()
    script = _SLOW_JOB.format(
        root=str(REPO_ROOT),
        tests=str(REPO_ROOT / "tests"),
        path=str(cache_path),
        go=str(go),
        ready=str(ready),
    )
    ranges = [(0, 120), (60, 180), (0, 180)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(lo), str(hi), str(job)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for job, (lo, hi) in enumerate(ranges)
    ]
    release_when_ready(procs, ready, go)
    calls = []
    for proc, (lo, hi) in zip(procs, ranges):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        made, hits = map(int, out.split())
        assert made + hits == hi - lo
        calls.append(made)
    # 180 distinct prompts, each paid for by exactly one of the three jobs.
    assert sum(calls) == 180
    assert len(CallCache(cache_path)) == 180


def _generate_in_thread(lm: EchoLM, prompt: str) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(
        target=lambda: out.append(lm.generate([prompt], GenerationParams())), daemon=True
    )
    thread.start()
    return thread, out


class _WatchedCache(CallCache):
    """A real cache that tells when it found a key held by another live process."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.saw_held = threading.Event()

    def held_elsewhere(self, keys):
        held = super().held_elsewhere(keys)
        if held:
            self.saw_held.set()
        return held


def test_a_claim_left_by_a_dead_process_is_taken_over(tmp_path, cache_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # An hour's claim timeout: the dead process's claim is taken over at once, not waited out.
    # (The join's deadline only bounds the hang of waiting for the timeout.)
    first = CallCache(cache_path, claim_timeout_s=3600)
    lm = EchoLM("echo-model", cache=first)
    key = lm._key(Request("orphan", GenerationParams()))
    with sqlite3.connect(str(cache_path)) as conn:
        conn.execute(
            "INSERT INTO claims VALUES (?, ?, ?, ?, ?)",
            (key, "gone", first.host, dead.pid, time.time()),
        )
    thread, out = _generate_in_thread(lm, "orphan")
    thread.join(timeout=60)
    assert not thread.is_alive(), "waited on a dead process's claim"
    [[[c]]] = out
    assert lm.served == 1 and c.text.startswith("orphan")


def test_a_live_claim_is_waited_for_and_an_expired_one_taken_over(tmp_path, cache_path):
    owner = (os.getppid(), "busy")  # a live process other than this one
    patient = _WatchedCache(cache_path, claim_timeout_s=3600)
    lm = EchoLM("echo-model", cache=patient)
    key = lm._key(Request("held", GenerationParams()))
    with sqlite3.connect(str(cache_path)) as conn:
        conn.execute(
            "INSERT INTO claims VALUES (?, ?, ?, ?, ?)",
            (key, owner[1], patient.host, owner[0], time.time()),
        )
    thread, out = _generate_in_thread(lm, "held")
    # Once the request is seen waiting on the live claim, the owner stores its result: the waiter
    # takes it and pays for nothing.
    assert patient.saw_held.wait(timeout=60), "the live claim was not waited for"
    CallCache(cache_path).put_many(
        [(key, {"text": "the owner's", "input_tokens": 1, "output_tokens": 2})]
    )
    thread.join(timeout=60)
    assert not thread.is_alive()
    [[[c]]] = out
    assert (c.text, lm.served, lm.usage.calls) == ("the owner's", 0, 0)
    # A live process's claim older than claim_timeout_s is taken over.
    impatient = CallCache(cache_path, claim_timeout_s=5)
    lm2 = EchoLM("echo-model", cache=impatient)
    key2 = lm2._key(Request("stuck", GenerationParams()))
    with sqlite3.connect(str(cache_path)) as conn:
        conn.execute(
            "INSERT INTO claims VALUES (?, ?, ?, ?, ?)",
            (key2, owner[1], impatient.host, owner[0], time.time() - 60),
        )
    thread, out = _generate_in_thread(lm2, "stuck")
    thread.join(timeout=60)
    assert not thread.is_alive(), "waited on an expired claim"
    assert lm2.served == 1 and out[0][0][0].text.startswith("stuck")


class _FailingConnection:
    """Stands in for a connection on a full disk: SQLite's own error, raised on every statement."""

    def __init__(self, message: str, kind=sqlite3.OperationalError):
        self.message, self.kind = message, kind

    def execute(self, *args, **kwargs):
        raise self.kind(self.message)


@pytest.mark.parametrize(
    ("message", "kind", "error", "says"),
    [
        ("database or disk is full", sqlite3.OperationalError, "CacheUnusable", "writable"),
        (
            "attempt to write a readonly database",
            sqlite3.OperationalError,
            "CacheUnusable",
            "writable",
        ),
        (
            "database disk image is malformed",
            sqlite3.DatabaseError,
            "CacheCorrupt",
            "move it aside",
        ),
    ],
)
def test_sqlite_errors_on_the_cache_are_one_line_naming_the_file(
    tmp_path, message, kind, error, says
):
    cache = CallCache(tmp_path / "calls.sqlite")
    cache._conn = _FailingConnection(message, kind)
    with pytest.raises(BackendError) as info:
        cache.get_many(["k"])
    assert type(info.value).__name__ == error
    line = str(info.value)
    assert "\n" not in line and str(tmp_path / "calls.sqlite") in line
    assert message in line and says in line
