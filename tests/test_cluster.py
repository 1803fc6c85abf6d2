"""Shared state across machines (docs/cluster.md), exercised on one: the call cache in network mode
(per-writer shards, O_EXCL claims) under several writers and SIGKILL, and the artifact store under
racing publishers that share no lock."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from fake_api_server import FakeApiServer
from omegaconf import OmegaConf

from lmgcot.errors import ConfigError
from lmgcot.llm.cache import CacheUnusable, CallCache
from lmgcot.llm.cache_shards import ShardedCallCache, merge, open_call_cache
from lmgcot.utils import sharedfs
from lmgcot.utils.store import shared_stage

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


# -- detection ---------------------------------------------------------------------------------

MOUNTS = """\
22 1 0:21 / / rw,relatime - ext4 /dev/sda1 rw
30 22 0:40 / /shared rw,relatime - nfs4 server:/export rw
31 30 0:41 / /shared/scratch rw - lustre 10.0.0.1@tcp:/fs rw,flock
32 22 0:42 / /mnt/my\\040bucket rw - fuse.s3fs s3fs rw
"""


def test_the_file_system_type_comes_from_the_mount_table(tmp_path):
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTS)
    kind = lambda p: sharedfs.fs_type(p, str(table))  # noqa: E731
    assert kind("/home/me/outputs") == "ext4"
    assert kind("/shared/outputs/cache") == "nfs4"
    assert kind("/shared/scratch/cache") == "lustre"  # the deepest mount point wins
    assert kind("/sharedfoo/cache") == "ext4"  # a prefix of a name is not a parent directory
    assert kind("/mnt/my bucket/cache") == "fuse.s3fs"
    assert sharedfs.fs_type("/", str(tmp_path / "no-such-table")) == "unknown"
    assert [sharedfs.is_network(k) for k in ("ext4", "nfs4", "lustre", "gpfs", "fuse.sshfs")] == [
        False,
        True,
        True,
        True,
        True,
    ]


@pytest.mark.parametrize(
    ("kind", "mode"), [("ext4", "local"), ("tmpfs", "local"), ("nfs", "network")]
)
def test_auto_picks_the_cache_by_file_system_and_a_setting_forces_it(
    tmp_path, monkeypatch, kind, mode
):
    monkeypatch.setattr(sharedfs, "fs_type", lambda path, *a: kind)
    cache = open_call_cache(tmp_path / "llm_calls.sqlite")
    # On a local disk nothing changes: the one SQLite file of a single machine.
    assert cache.mode == mode and isinstance(
        cache, CallCache if mode == "local" else ShardedCallCache
    )
    cache.close()
    assert open_call_cache(tmp_path / "forced.sqlite", "network").mode == "network"
    monkeypatch.setattr(sharedfs, "fs_type", lambda path, *a: "nfs4")
    assert open_call_cache(tmp_path / "local.sqlite", "local").mode == "local"
    with pytest.raises(ConfigError, match="paths.shared_fs='nsf': must be one of auto, local"):
        open_call_cache(tmp_path / "x.sqlite", "nsf")


def test_an_object_store_mount_is_refused_in_one_line_before_any_paid_work(tmp_path, monkeypatch):
    from lmgcot.pipeline import _call_cache

    monkeypatch.setattr(sharedfs, "fs_type", lambda path, *a: "fuse.gcsfuse")
    cfg = OmegaConf.create(
        {"paths": {"cache_dir": str(tmp_path / "c"), "artifact_dir": str(tmp_path / "a")}}
    )
    with pytest.raises(ConfigError) as err:
        _call_cache(cfg)
    line = str(err.value)
    assert "\n" not in line
    assert "paths.cache_dir=" in line and "fuse.gcsfuse" in line
    assert "paths.shared_fs=network" in line  # the setting that lets it run anyway
    assert not (tmp_path / "c").exists()  # refused before the cache was even created
    cfg.paths.shared_fs = "network"
    assert _call_cache(cfg).mode == "network"


# -- the call cache in network mode: writers in processes ---------------------------------------

# A job's large LM: the API backends' machinery (concurrent requests, each reply stored as it
# arrives) over plain HTTP to the fake server, without an SDK to import in every child.
WORKER = textwrap.dedent(
    """
    import asyncio, contextlib, hashlib, json, sys, urllib.request
    from lmgcot.llm.api import ApiLargeLM
    from lmgcot.llm.base import Completion, GenerationParams
    from lmgcot.llm.cache_shards import open_call_cache

    class HttpLM(ApiLargeLM):
        backend = "http"
        _api_errors = (OSError,)

        def _make_client(self):
            return contextlib.nullcontext()

        async def _call(self, client, request):
            body = {"model": self.model, "max_tokens": request.params.max_new_tokens,
                    "temperature": request.params.temperature,
                    "messages": [{"role": "user", "content": request.prompt}]}
            def post():
                req = urllib.request.Request(self.base_url + "/v1/messages",
                                             data=json.dumps(body).encode(),
                                             headers={"content-type": "application/json"})
                return json.loads(urllib.request.urlopen(req, timeout=60).read())
            reply = await asyncio.to_thread(post)
            usage = reply["usage"]
            return Completion(reply["content"][0]["text"], usage["input_tokens"],
                              usage["output_tokens"])

    url, path, n, order = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    lm = HttpLM("claude-test", cache=open_call_cache(path, "network"), base_url=url,
                max_concurrency=4, batch_size=8)
    prompts = [f"cluster question {i}" for i in range(n)]
    out = lm.generate(prompts[::-1] if order == "reverse" else prompts,
                      GenerationParams(max_new_tokens=16))
    digest = hashlib.sha256("\\n".join(sorted(c[0].text for c in out)).encode()).hexdigest()
    print(json.dumps({"calls": lm.usage.calls, "hits": lm.usage.cache_hits, "digest": digest}))
    lm.close()
    """
)


def _workers(server, path, n, orders):
    return [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, server.url, str(path), str(n), order],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for order in orders
    ]


def _finish(procs) -> list[dict]:
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def test_two_writers_in_opposite_orders_pay_each_prompt_once(tmp_path):
    path, n = tmp_path / "llm_calls.sqlite", 80
    with FakeApiServer(latency_s=0.005) as server:
        results = _finish(_workers(server, path, n, ["forward", "reverse", "forward"]))
        paid = dict(server.paid)
    # Three jobs that share no lock and no SQLite file: every prompt paid for by one of them.
    assert len(paid) == n and set(paid.values()) == {1}
    assert sum(r["calls"] for r in results) == n
    assert all(r["calls"] + r["hits"] == n for r in results)
    assert len({r["digest"] for r in results}) == 1  # the same replies, whoever paid
    cache = ShardedCallCache(path, read_only=True)
    assert cache.check() == "ok" and len(cache) == n
    assert not list((tmp_path / "llm_calls.claims").iterdir())  # every claim ended


def test_sigkill_of_writers_in_opposite_orders_loses_no_paid_reply(tmp_path):
    path, n = tmp_path / "llm_calls.sqlite", 80
    hold = random.Random(25).randint(20, 50)  # where the kill comes, a seeded "random moment"
    with FakeApiServer() as server:
        server.hold_after = hold  # every request after the first `hold` waits
        procs = _workers(server, path, n, ["forward", "reverse"])
        deadline = time.monotonic() + 60
        # Killed once the first `hold` replies are stored and the next calls are on their way.
        while len(ShardedCallCache(path, read_only=True)) < hold or not server._in_flight:
            assert all(p.poll() is None for p in procs), "a writer ended before the kill"
            assert time.monotonic() < deadline, "the paid replies never reached the cache"
            time.sleep(0.01)
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        paid_at_kill = set(server.paid)
        stored = ShardedCallCache(path, read_only=True)
        assert len(paid_at_kill) == hold and len(stored) == hold  # 0 replies lost
        assert stored.check() == "ok"
        # What was in flight is answered to dead sockets: paid, never stored, paid again below.
        server.hold_after = None
        server.release.set()
        while server._in_flight:
            time.sleep(0.01)
        results = _finish(_workers(server, path, n, ["reverse", "forward"]))
        paid = dict(server.paid)
    assert len(paid) == n
    # Each prompt once, plus the calls the kill cut off (counted at the end, so a request of a
    # killed writer that reached the server late is in the count, not a race): at least the one
    # in flight at the kill, at most each writer's concurrency.
    again = sum(paid.values()) - n
    assert 1 <= again <= 2 * 4 and max(paid.values()) <= 2
    assert len({r["digest"] for r in results}) == 1
    after = ShardedCallCache(path, read_only=True)
    assert after.check() == "ok" and len(after) == n
    # The dead writers' claims were taken over at once (same host, their pids are gone); what is
    # left is a claim on a reply a writer stored just before its kill, which merge clears.
    left = [p.name for p in (tmp_path / "llm_calls.claims").iterdir()]
    assert len(after.get_many(left)) == len(left)
    merge(tmp_path)
    assert not list((tmp_path / "llm_calls.claims").iterdir())


def test_merge_folds_finished_shards_into_the_base_and_leaves_live_ones(tmp_path):
    base = tmp_path / "llm_calls.sqlite"
    old = CallCache(base)
    old.put_many([("local", {"text": "from a one-machine run"})])
    old.close()
    done, live = ShardedCallCache(base), ShardedCallCache(base)
    done.put_many([(f"k{i}", {"text": str(i)}) for i in range(5)])
    live.put_many([("k0", {"text": "a duplicate"}), ("k9", {"text": "9"})])
    done.close()
    line = merge(tmp_path)
    assert "merged 1 shards" in line and "5 new calls, 6 in all" in line and "1 shards" in line
    assert len(list((tmp_path / "llm_calls.shards").iterdir())) == 1  # the live writer's
    assert live.get_many(["local", "k3", "k9"]) == {
        "local": {"text": "from a one-machine run"},
        "k3": {"text": "3"},
        "k9": {"text": "9"},
    }
    assert len(live) == 7 and live.check() == "ok"
    live.close()
    assert "merged 1 shards" in merge(tmp_path)
    assert len(CallCache(base)) == 7


def test_a_torn_last_line_is_not_a_reply_and_a_local_wal_is_named(tmp_path):
    base = tmp_path / "llm_calls.sqlite"
    writer = ShardedCallCache(base)
    writer.put_many([("a", {"text": "A"}), ("b", {"text": "B"})])
    shard = next((tmp_path / "llm_calls.shards").iterdir())
    with open(shard, "ab") as handle:
        handle.write(b'0123456789abcdef\t{"key":"c","val')  # a writer killed mid-line
    reader = ShardedCallCache(base, read_only=True)
    assert reader.get_many(["a", "b", "c"]) == {"a": {"text": "A"}, "b": {"text": "B"}}
    assert reader.check() == "ok"
    # A line whose bytes changed is not taken for a reply, and integrity says so.
    data = shard.read_bytes().replace(b'"A"', b'"Z"')
    shard.write_bytes(data)
    fresh = ShardedCallCache(base, read_only=True)
    assert fresh.get_many(["a"]) == {}
    assert "1 damaged lines" in fresh.check()
    # A killed local-mode run left its replies in a -wal file: read over NFS they would be missed.
    base.touch()
    base.with_name(base.name + "-wal").write_bytes(b"x" * 10)
    with pytest.raises(CacheUnusable, match="python -m lmgcot.llm.cache_shards merge"):
        ShardedCallCache(base, read_only=True).get_many(["a"])


# -- the artifact store: racing publishers that share no lock -----------------------------------

PUBLISHER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from lmgcot.utils.store import shared_stage
    stored, out, go, lease, files = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    Path(go + "." + str(os.getpid())).touch()  # ready
    while not os.path.exists(go):
        time.sleep(0.001)

    def finished(path):
        meta = Path(path) / "meta.json"
        return meta.exists() and json.loads(meta.read_text())["done"]

    def make():
        if finished(out):
            return "taken"
        out.mkdir(parents=True, exist_ok=True)
        for i in range(files):
            (out / f"part{i}").write_text(f"{i} " * 50)
        (out / "meta.json").write_text(json.dumps({"done": True}))
        return "made"

    got = shared_stage(stored, out, finished, make, lease=lease == "1", stale_s=5, poll_s=0.01)
    print(got.how, got.summary)
    """
)

FILES = 200


def _complete(stage: Path) -> bool:
    names = {p.name for p in stage.iterdir()}
    return names == {"meta.json", *(f"part{i}" for i in range(FILES))} and all(
        (stage / f"part{i}").read_text() == f"{i} " * 50 for i in range(FILES)
    )


def _race(tmp_path: Path, n: int, lease: bool) -> tuple[list[str], int, int]:
    """n processes obtain one stage at once while a reader watches the store; (outcomes, times
    the reader saw the stage, times it saw it incomplete)."""
    stored = tmp_path / "store" / "teacher" / "fp123"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                PUBLISHER,
                str(stored),
                str(tmp_path / f"job{j}" / "teacher"),
                str(go),
                "1" if lease else "0",
                str(FILES),
            ],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for j in range(n)
    ]
    seen, broken, stop = [0], [0], threading.Event()

    def reader():
        # What every job that finds the stage reads: it must be whole whenever it is there.
        while not stop.is_set():
            try:
                if stored.exists():
                    seen[0] += 1
                    broken[0] += not _complete(stored)
            except FileNotFoundError:
                broken[0] += 1
            time.sleep(0.0005)

    watcher = threading.Thread(target=reader, daemon=True)
    watcher.start()
    # Every interpreter started and waiting; then all of them are let go together.
    while len(list(tmp_path.glob("go.*"))) < n:
        assert all(p.poll() is None for p in procs), "a publisher ended before the start"
        time.sleep(0.01)
    go.touch()
    outcomes = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr[-3000:]
        outcomes.append(stdout.split()[0])
    stop.set()
    watcher.join()
    assert _complete(stored)
    # One published copy and nothing half-made left beside it.
    assert sorted(p.name for p in stored.parent.iterdir()) == ["fp123"]
    return outcomes, seen[0], broken[0]


def test_racing_publishers_without_a_lease_leave_one_whole_copy(tmp_path):
    outcomes, seen, broken = _race(tmp_path, 4, lease=False)
    assert outcomes.count("published") == 1
    # With no coordination at all each job may compute: the recomputations are counted and are
    # at most n - 1, never a second copy or a half-published stage.
    assert (
        outcomes.count("published") + outcomes.count("discarded") + outcomes.count("fetched") == 4
    )
    assert seen > 0 and broken == 0


def test_racing_jobs_with_the_lease_compute_a_stage_once(tmp_path):
    outcomes, seen, broken = _race(tmp_path, 4, lease=True)
    assert sorted(outcomes) == ["fetched", "fetched", "fetched", "published"]
    assert seen > 0 and broken == 0


def _finished(path: Path) -> bool:
    return (path / "meta.json").exists()


def _maker(out: Path):
    def make():
        if not _finished(out):
            out.mkdir(parents=True, exist_ok=True)
            (out / "meta.json").write_text("{}")
        return "made"

    return make


def test_the_lease_of_a_dead_job_is_taken_over(tmp_path):
    stored = tmp_path / "teacher" / "fp"
    lease = stored.with_name("fp.making")
    lease.parent.mkdir(parents=True)
    # A job on this host that died: its pid is gone, so the lease goes at once.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lease.write_text(json.dumps({"owner": "x", "host": os.uname().nodename, "pid": dead.pid}))
    t0 = time.monotonic()
    got = shared_stage(stored, tmp_path / "a", _finished, _maker(tmp_path / "a"), stale_s=60)
    assert got.how == "published" and time.monotonic() - t0 < 5
    # A job on another host whose lease file stopped changing: taken over after stale_s.
    stored2 = tmp_path / "teacher" / "fp2"
    lease2 = stored2.with_name("fp2.making")
    lease2.write_text(json.dumps({"owner": "y", "host": "node-elsewhere", "pid": 1}))
    t0 = time.monotonic()
    got = shared_stage(
        stored2, tmp_path / "b", _finished, _maker(tmp_path / "b"), stale_s=0.3, poll_s=0.02
    )
    assert got.how == "published" and 0.3 <= time.monotonic() - t0 < 5
    assert not lease.exists() and not lease2.exists()


HOLDER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from lmgcot.utils.store import shared_stage
    stored, out = Path(sys.argv[1]), Path(sys.argv[2])

    def make():
        Path(sys.argv[3]).touch()  # holding the lease now
        time.sleep(1.0)  # several stale_s: only the heartbeat keeps the lease alive
        out.mkdir(parents=True, exist_ok=True)
        (out / "meta.json").write_text("{}")
        return "made"

    print(shared_stage(stored, out, lambda p: (p / "meta.json").exists(), make, stale_s=0.2).how)
    """
)


def test_a_live_lease_on_another_host_is_kept_alive_by_its_heartbeat(tmp_path, monkeypatch):
    stored, started = tmp_path / "teacher" / "fp", tmp_path / "started"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(stored), str(tmp_path / "a"), str(started)],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    while not started.exists():
        assert holder.poll() is None
        time.sleep(0.01)
    # Judge the holder as a job on another node would: by its lease file's changes alone.
    monkeypatch.setattr("lmgcot.utils.store.socket.gethostname", lambda: "another-node")
    got = shared_stage(
        stored, tmp_path / "b", _finished, _maker(tmp_path / "b"), stale_s=0.2, poll_s=0.02
    )
    assert got.how == "fetched" and got.summary == "made"
    assert holder.communicate(timeout=30)[0].strip() == "published"


def test_both_modes_serve_a_rerun_from_the_cache_with_the_same_replies(tmp_path, monkeypatch):
    from lmgcot.llm.anthropic import AnthropicLargeLM
    from lmgcot.llm.base import GenerationParams

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    digests = []
    for mode in ("local", "network"):
        with FakeApiServer() as server:
            cache = open_call_cache(tmp_path / mode / "llm_calls.sqlite", mode)
            lm = AnthropicLargeLM("claude-test", cache=cache, base_url=server.url)
            texts = [
                c[0].text for c in lm.generate([f"q{i}" for i in range(10)], GenerationParams())
            ]
            again = AnthropicLargeLM("claude-test", cache=cache, base_url=server.url)
            assert [
                c[0].text for c in again.generate([f"q{i}" for i in range(10)], GenerationParams())
            ] == texts
            assert again.usage.calls == 0 and again.usage.cache_hits == 10
            lm.close()
            digests.append(hashlib.sha256("".join(texts).encode()).hexdigest())
    assert digests[0] == digests[1]
