"""Paid replies under faults, run by hand: kills, transient errors, permanent errors, two processes.

    python benchmarks/faults.py [--calls 2000] [--latency 0.02] [--kills 10] [--only a b c d e f]
                                [--shared-fs network] [--publishers 4] [--rounds 10]

A teacher-stage-like workload (`--calls` prompts sharing a few-shot prefix, one call each) goes
through the real `AnthropicLargeLM` and SQLite call cache, in worker processes, against the tests'
local fake API server (tests/fake_api_server.py) in this process, which records every 200 reply
(what a real API bills) and when its bytes were written.

(a) SIGKILL at `--kills` random moments, restarting each time: replies lost, i.e. written to the
    socket more than TRANSIT_S before the kill and not in the cache (must be 0); calls in flight
    (being answered) or in transit (written < TRANSIT_S before) at the kill, which a rerun pays
    again; PRAGMA integrity_check; and at the end paid calls vs unique prompts.
(b) 30% of attempts fail with 429 / 500 / 529, default settings: completes with the same replies
    and counts as a fault-free run.
(c) 1% of prompts fail for good (HTTP 400): the rest is stored, one error line, a rerun pays for
    nothing else.
(d) two workers on one cache at once (opposite orders): nothing paid twice, nothing corrupt.

Across machines (docs/cluster.md), on this one: `--shared-fs network` runs (a)-(d) through the call
cache's network mode (per-writer shards, O_EXCL claims), and two more scenarios use it always:
(e) two workers in opposite orders, both SIGKILLed at `--kills` random moments and restarted:
    replies lost, calls in flight, paid twice, integrity, as in (a).
(f) the artifact store: `--publishers` processes obtain one stage at once, `--rounds` times, with
    and without the lease, while a reader polls the store: published copies per round (must be 1),
    recomputations (copies made and discarded), and the times a reader saw a stage incomplete
    (must be 0).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_api_server import FakeApiServer  # noqa: E402

from lmgcot.errors import LmgcotError  # noqa: E402
from lmgcot.llm.anthropic import AnthropicLargeLM  # noqa: E402
from lmgcot.llm.base import GenerationParams, Request  # noqa: E402
from lmgcot.llm.cache import CallCache  # noqa: E402
from lmgcot.llm.cache_shards import ShardedCallCache, open_call_cache  # noqa: E402
from lmgcot.utils.store import shared_stage  # noqa: E402

PARAMS = GenerationParams(max_new_tokens=64)
# A reply written to the socket this recently before a kill counts as in transit, not lost.
TRANSIT_S = 0.01
PREFIX = "".join(
    f"Q: worked example {i}?\nA: step one, step two. So the answer is {i}.\n" for i in range(8)
)


def prompts(n: int) -> list[str]:
    return [f"{PREFIX}Q: question number {i}: what follows {i * 7}?\nA:" for i in range(n)]


# The call cache's mode for (a)-(d): --shared-fs, passed on to the workers.
MODE = {"fs": "local"}


def open_cache(path, read_only: bool = False):
    if MODE["fs"] == "network":
        return ShardedCallCache(path, read_only=read_only)
    return CallCache(path)


def worker(url: str, cache_path: str, n: int, reverse: bool) -> None:
    """One run of the workload; prints a JSON line (calls, hits, digest of the replies, error)."""
    cache = open_call_cache(cache_path, MODE["fs"])
    lm = AnthropicLargeLM("claude-bench", cache=cache, base_url=url)
    lm.set_stage("teacher")
    todo = prompts(n)[::-1] if reverse else prompts(n)
    out = {"error": None}
    try:
        texts = [c[0].text for c in lm.generate(todo, PARAMS)]
        out["digest"] = hashlib.sha256("\n".join(sorted(texts)).encode()).hexdigest()[:12]
    except LmgcotError as err:
        out["error"] = str(err)
    out |= {"calls": lm.usage.calls, "hits": lm.usage.cache_hits}
    print(json.dumps(out), flush=True)


def spawn(server: FakeApiServer, cache: Path, n: int, reverse: bool = False) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, __file__, "--worker", server.url, str(cache), str(n)]
    args += ["--shared-fs", MODE["fs"]]
    return subprocess.Popen(
        args + (["--reverse"] if reverse else []),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def finish(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=1800)
    return json.loads(out.strip().splitlines()[-1])


def paid_total(server: FakeApiServer) -> int:
    return sum(server.paid.values())


def stored(server: FakeApiServer, cache_path: Path, keys: set[str]) -> set[str]:
    """Which server body keys have their reply in the cache."""
    lm = AnthropicLargeLM("claude-bench", base_url=server.url)
    prompt_of = {}
    for r in list(server.requests):
        k = hashlib.sha256(json.dumps(r.body, sort_keys=True).encode()).hexdigest()
        if k in keys:
            blocks = r.body["messages"][0]["content"]
            text = blocks if isinstance(blocks, str) else "".join(b["text"] for b in blocks)
            prompt_of[k] = text
    cache = open_cache(cache_path, read_only=True)
    have = cache.get_many([lm._key(Request(p, PARAMS)) for p in prompt_of.values()])
    cache.close()
    return {k for k, p in prompt_of.items() if lm._key(Request(p, PARAMS)) in have}


def integrity(cache_path: Path) -> str:
    cache = open_cache(cache_path, read_only=True)
    try:
        return cache.check()
    finally:
        cache.close()


def scenario_kills(server: FakeApiServer, tmp: Path, n: int, kills: int) -> None:
    print(f"(a) SIGKILL at {kills} random moments, {n} prompts, restart after each")
    cache = tmp / "a.sqlite"
    rng = random.Random(1)
    targets = sorted(rng.sample(range(50, n - 50), kills))
    for k, target in enumerate(targets):
        t_start = time.time()
        proc = spawn(server, cache, n)
        # Killed after it has made some calls of its own, not while it is still starting up.
        target = max(target, len(server.paid) + 20)
        while len(server.paid) < target and proc.poll() is None:
            time.sleep(0.002)
        in_flight = server._in_flight
        proc.send_signal(signal.SIGKILL)
        t_kill = time.time()
        proc.wait()
        time.sleep(0.2)  # let the server finish writing what it had started
        # Only replies to this worker: the last one's in-flight calls were answered to a dead socket.
        sent_at = {key: t for t, key in list(server.sent) if t_start <= t <= t_kill}
        lost = set(sent_at) - stored(server, cache, set(sent_at))
        # A reply written moments before the kill may still be in the socket or being parsed:
        # in transit, like a call in flight. One written longer before and not stored is lost.
        transit = {key for key in lost if t_kill - sent_at[key] <= TRANSIT_S}
        lost -= transit
        print(
            f"  kill {k + 1:2d}: {paid_total(server):5d} paid calls, {len(server.paid):5d} unique, "
            f"{in_flight} in flight + {len(transit)} in transit at the kill, "
            f"replies lost: {len(lost)}, "
            f"integrity: {integrity(cache)}"
        )
    result = finish(spawn(server, cache, n))
    print(
        f"  final run: {result['calls']} calls, {result['hits']} hits, error: {result['error']}; "
        f"in all {paid_total(server)} paid calls for {n} unique prompts "
        f"({paid_total(server) - n} paid twice), integrity: {integrity(cache)}"
    )


def scenario_transient(server: FakeApiServer, tmp: Path, n: int) -> None:
    print(f"(b) 30% of attempts fail with 429/500/529, default retry settings, {n} prompts")
    runs = {}
    for rate in (0.0, 0.3):
        server.reset()
        server.fault_rate = rate
        t0 = time.perf_counter()
        result = finish(spawn(server, tmp / f"b{rate}.sqlite", n))
        faults = sum(r.status != 200 for r in server.requests)
        runs[rate] = (
            result,
            paid_total(server),
            len(open_cache(tmp / f"b{rate}.sqlite", read_only=True)),
        )
        print(
            f"  fault rate {rate:.0%}: {faults} faulted attempts, {result['calls']} calls, "
            f"{runs[rate][1]} paid, {runs[rate][2]} cached, replies {result.get('digest')}, "
            f"error: {result['error']}, {time.perf_counter() - t0:.0f} s"
        )
    server.fault_rate = 0.0
    same = (
        runs[0.0][0].get("digest") == runs[0.3][0].get("digest") and runs[0.0][1:] == runs[0.3][1:]
    )
    print(f"  same replies and counts as the fault-free run: {same}")


def scenario_permanent(server: FakeApiServer, tmp: Path, n: int) -> None:
    print(f"(c) 1% of prompts fail for good (HTTP 400), {n} prompts")
    server.reset()
    server.failing_rate = 0.01
    cache = tmp / "c.sqlite"
    first = finish(spawn(server, cache, n))
    print(
        f"  run 1: {first['calls']} calls paid, {len(open_cache(cache, read_only=True))} cached; error line:"
    )
    print(f"    {first['error']}")
    server.reset()
    second = finish(spawn(server, cache, n))
    print(
        f"  rerun: {len(server.requests)} requests sent ({paid_total(server)} paid), "
        f"{second['hits']} cache hits; error: {(second['error'] or '')[:70]}..."
    )
    server.failing_rate = 0.0


def scenario_two(server: FakeApiServer, tmp: Path, n: int) -> None:
    print(f"(d) two workers on one cache at once, opposite orders, {n} prompts")
    server.reset()
    cache = tmp / "d.sqlite"
    procs = [spawn(server, cache, n), spawn(server, cache, n, reverse=True)]
    results = [finish(p) for p in procs]
    for i, r in enumerate(results):
        print(f"  worker {i + 1}: {r['calls']} calls, {r['hits']} hits, error: {r['error']}")
    print(
        f"  {paid_total(server)} paid calls for {n} unique prompts "
        f"({paid_total(server) - len(server.paid)} paid twice), same replies: "
        f"{results[0].get('digest') == results[1].get('digest')}, integrity: {integrity(cache)}"
    )


def scenario_kills_two(server: FakeApiServer, tmp: Path, n: int, kills: int) -> None:
    print(
        f"(e) network mode: two workers in opposite orders, SIGKILL at {kills} random moments, "
        f"{n} prompts, restart after each"
    )
    before, MODE["fs"] = MODE["fs"], "network"
    server.reset()
    cache = tmp / "e.sqlite"
    rng = random.Random(2)
    targets = sorted(rng.sample(range(50, n - 50), kills))
    cut_off = 0  # calls in flight or in transit at the kills: paid, never stored, paid again
    for k, target in enumerate(targets):
        t_start = time.time()
        procs = [spawn(server, cache, n), spawn(server, cache, n, reverse=True)]
        target = max(target, len(server.paid) + 20)
        while len(server.paid) < target and all(p.poll() is None for p in procs):
            time.sleep(0.002)
        in_flight = server._in_flight
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
        t_kill = time.time()
        for proc in procs:
            proc.wait()
        time.sleep(0.2)
        sent_at = {key: t for t, key in list(server.sent) if t_start <= t <= t_kill}
        lost = set(sent_at) - stored(server, cache, set(sent_at))
        transit = {key for key in lost if t_kill - sent_at[key] <= TRANSIT_S}
        lost -= transit
        cut_off += in_flight + len(transit)
        print(
            f"  kill {k + 1:2d}: {paid_total(server):5d} paid calls, {len(server.paid):5d} unique, "
            f"{in_flight} in flight + {len(transit)} in transit at the kill, "
            f"replies lost: {len(lost)}, integrity: {integrity(cache)}"
        )
    results = [finish(p) for p in (spawn(server, cache, n), spawn(server, cache, n, reverse=True))]
    twice = paid_total(server) - n
    print(
        f"  final runs: {[r['calls'] for r in results]} calls, errors: "
        f"{[r['error'] for r in results]}; in all {paid_total(server)} paid calls for {n} unique "
        f"prompts ({twice} paid twice; {cut_off} were cut off by the kills), same replies: "
        f"{results[0].get('digest') == results[1].get('digest')}, integrity: {integrity(cache)}, "
        f"shards: {len(list(cache.with_suffix('.shards').iterdir()))}"
    )
    MODE["fs"] = before


PUBLISH_FILES = 200


def publisher(stored: str, out: str, go: str, lease: bool) -> None:
    """One job obtaining a stage of PUBLISH_FILES files through the store; prints its outcome."""
    stored_p, out_p = Path(stored), Path(out)
    while not os.path.exists(go):
        time.sleep(0.001)

    def finished(path: Path) -> bool:
        return (path / "meta.json").exists()

    def make() -> str:
        if finished(out_p):
            return "taken"
        out_p.mkdir(parents=True, exist_ok=True)
        for i in range(PUBLISH_FILES):
            (out_p / f"part{i}").write_text(f"{i} " * 50)
            time.sleep(0.0005)  # a stage takes a while to make
        (out_p / "meta.json").write_text("{}")
        return "made"

    print(shared_stage(stored_p, out_p, finished, make, lease=lease, poll_s=0.01).how, flush=True)


def whole(stage: Path) -> bool:
    names = {p.name for p in stage.iterdir()}
    expected = {"meta.json", *(f"part{i}" for i in range(PUBLISH_FILES))}
    return names == expected and all(
        (stage / f"part{i}").read_text() == f"{i} " * 50 for i in range(PUBLISH_FILES)
    )


def scenario_publication(tmp: Path, publishers: int, rounds: int) -> None:
    print(
        f"(f) the artifact store: {publishers} processes obtain one stage at once, {rounds} rounds, "
        "no lock shared, a reader polling the store"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for lease in (False, True):
        tally: dict[str, int] = {}
        copies, seen, broken = [], 0, 0
        t0 = time.perf_counter()
        for r in range(rounds):
            base = tmp / f"f{int(lease)}-{r}"
            stored, go = base / "store" / "teacher" / "fp", base / "go"
            base.mkdir(parents=True)
            procs = [
                subprocess.Popen(
                    [sys.executable, __file__, "--publisher", str(stored)]
                    + [str(base / f"job{j}"), str(go)]
                    + (["--lease"] if lease else []),
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for j in range(publishers)
            ]
            time.sleep(1.0)  # the interpreters start
            stop = threading.Event()
            counts = [0, 0]

            def watch(stored=stored, stop=stop, counts=counts):
                while not stop.is_set():
                    try:
                        if stored.exists():
                            counts[0] += 1
                            counts[1] += not whole(stored)
                    except FileNotFoundError:
                        counts[1] += 1
                    time.sleep(0.0005)  # leave the publishers some CPU

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            go.touch()
            for proc in procs:
                how = proc.communicate(timeout=600)[0].split()[0]
                tally[how] = tally.get(how, 0) + 1
            stop.set()
            watcher.join()
            copies.append(len([p for p in stored.parent.iterdir() if p.name.startswith("fp")]))
            seen, broken = seen + counts[0], broken + counts[1]
        print(
            f"  lease {'on ' if lease else 'off'}: published copies per round {sorted(set(copies))}, "
            f"outcomes {dict(sorted(tally.items()))} "
            f"(recomputations: {tally.get('discarded', 0)} of {publishers * rounds} jobs), "
            f"reader saw the stage {seen} times, incomplete {broken} times, "
            f"{time.perf_counter() - t0:.0f} s"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--only", nargs="+", default=["a", "b", "c", "d", "e", "f"])
    ap.add_argument("--shared-fs", choices=["local", "network"], default="local")
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--worker", nargs=3, metavar=("URL", "CACHE", "N"))
    ap.add_argument("--reverse", action="store_true")
    ap.add_argument("--publisher", nargs=3, metavar=("STORED", "OUT", "GO"))
    ap.add_argument("--lease", action="store_true")
    args = ap.parse_args()
    MODE["fs"] = args.shared_fs
    os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-benchmark-not-a-key")
    if args.publisher:
        publisher(*args.publisher, lease=args.lease)
        return
    if args.worker:
        url, cache, n = args.worker
        worker(url, cache, int(n), args.reverse)
        return
    with tempfile.TemporaryDirectory() as tmp, FakeApiServer(latency_s=args.latency) as server:
        steps = {
            "a": lambda: scenario_kills(server, Path(tmp), args.calls, args.kills),
            "b": lambda: scenario_transient(server, Path(tmp), args.calls),
            "c": lambda: scenario_permanent(server, Path(tmp), args.calls),
            "d": lambda: scenario_two(server, Path(tmp), args.calls),
            "e": lambda: scenario_kills_two(server, Path(tmp), args.calls, args.kills),
            "f": lambda: scenario_publication(Path(tmp), args.publishers, args.rounds),
        }
        for name in args.only:
            steps[name]()


if __name__ == "__main__":
    main()
