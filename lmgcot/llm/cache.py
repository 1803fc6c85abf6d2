"""Persistent large-LM call cache: one SQLite file in WAL mode, shared by every run that points at it.

A key covers backend, model, full prompt, every generation parameter and the sample index, so a
re-run (or another run of a sweep) never pays for the same call twice and temperature > 0 samples
stay distinct. The API backends commit each reply as it arrives (the local ones a chunk at a time):
a killed process loses at most the calls whose replies had not arrived and never leaves a corrupt
file. A file SQLite cannot read is named with what to do (`CacheCorrupt`); a missing one is created.

Processes sharing the file (the jobs of a sweep) also share the work in flight: before computing
calls, a process claims their keys (`claim`); keys another live process has claimed are waited for
rather than paid for twice. A claim ends when its result is stored or it is released; the claim of a
process that died is taken over (at once on the same host, after `claim_timeout_s` from another).

All of this holds for processes on one host. On a network file system (jobs on several machines)
`lmgcot.llm.cache_shards.open_call_cache` gives its per-writer shards instead (docs/cluster.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from lmgcot.errors import BackendError


class CacheUnusable(BackendError):
    """The cache file cannot be written or locked (read-only, disk full, lock timeout)."""


class CacheCorrupt(BackendError):
    """The call-cache file is not a readable SQLite database."""


def _named_if_corrupt(method):
    """Turn SQLite's errors into one line naming the file: "malformed" / "not a database" as a
    corrupt cache, the others (read-only file, full disk, lock timeout) as what they are."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as err:
            raise self.failure(err) from None

    return wrapper


def cache_key(**parts) -> str:
    """A stable hash of everything that determines a completion."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=list)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def select_calls(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, dict]:
    """The stored replies of `keys` in a cache database, in chunks under SQLite's variable limit."""
    out: dict[str, dict] = {}
    for start in range(0, len(keys), 500):
        chunk = list(keys[start : start + 500])
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", chunk)
        out.update((k, json.loads(v)) for k, v in rows.fetchall())
    return out


class CallCache:
    mode = "local"

    def __init__(self, path: str | Path, timeout_s: float = 60.0, claim_timeout_s: float = 3600.0):
        self.path = Path(path)
        self.claim_timeout_s = float(claim_timeout_s)
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            str(self.path), timeout=timeout_s, isolation_level=None, check_same_thread=False
        )
        self._setup(timeout_s)

    @classmethod
    def reader(cls, path: str | Path, timeout_s: float = 60.0) -> CallCache | None:
        """A read-only view of an existing cache file, None when there is none: a plan looks
        calls up without creating or changing anything (only `get_many` is for it)."""
        path = Path(path)
        if not path.is_file():
            return None
        self = cls.__new__(cls)
        self.path = path
        self.claim_timeout_s = 0.0
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:reader"
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=timeout_s,
                check_same_thread=False,
            )
            self._conn.execute("SELECT 1 FROM calls LIMIT 1").fetchall()
        except sqlite3.DatabaseError as err:
            raise self.failure(err) from None
        return self

    def _setup(self, timeout_s: float) -> None:
        # Switching to WAL needs a moment of exclusive access, and SQLite answers "locked" at once
        # (no busy wait) when several processes open a fresh file together: retry with back-off.
        deadline = time.monotonic() + timeout_s
        delay = 0.01
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
                    " created REAL DEFAULT (julianday('now')))"
                )
                self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL,"
                    " host TEXT NOT NULL, pid INTEGER NOT NULL, at REAL NOT NULL)"
                )
                return
            except sqlite3.DatabaseError as err:
                if "locked" not in str(err) and "busy" not in str(err):
                    raise self.failure(err) from None
                if time.monotonic() > deadline:
                    raise self.failure(err) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def failure(self, err: sqlite3.DatabaseError) -> Exception:
        """The one-line error for an SQLite error on the cache file."""
        if isinstance(err, sqlite3.OperationalError) or not (
            "malformed" in str(err) or "not a database" in str(err)
        ):
            return CacheUnusable(
                f"call cache {self.path}: {' '.join(str(err).split())} (is paths.cache_dir "
                "writable, with space left, and not on a file system without locks?)"
            )
        return self.corrupt(err)

    def corrupt(self, err: BaseException) -> Exception:
        """The one-line error for a cache file SQLite cannot read."""
        return CacheCorrupt(
            f"call cache {self.path} is unreadable ({' '.join(str(err).split())}): move it aside "
            f"(mv {self.path} {self.path}.corrupt) to start a fresh cache, or point "
            "paths.cache_dir elsewhere; `sqlite3 FILE .recover` may save its calls"
        )

    def check(self) -> str:
        """SQLite's full integrity check: 'ok' or the first problem it found."""
        with self._lock:
            try:
                return self._conn.execute("PRAGMA integrity_check").fetchone()[0]
            except sqlite3.DatabaseError as err:
                return str(err)

    @_named_if_corrupt
    def get_many(self, keys: Sequence[str]) -> dict[str, dict]:
        with self._lock:
            return select_calls(self._conn, keys)

    def get(self, key: str) -> dict | None:
        return self.get_many([key]).get(key)

    @_named_if_corrupt
    def put_many(self, items: Iterable[tuple[str, dict]]) -> None:
        rows = [(k, json.dumps(v, ensure_ascii=False)) for k, v in items]
        if not rows:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                # First writer wins: a concurrent job that computed the same call keeps one copy.
                self._conn.executemany(
                    "INSERT OR IGNORE INTO calls (key, value) VALUES (?, ?)", rows
                )
                self._conn.executemany("DELETE FROM claims WHERE key = ?", [(k,) for k, _ in rows])
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    @_named_if_corrupt
    def claim(self, keys: Sequence[str]) -> tuple[list[str], list[str]]:
        """Claim keys for computing: (claimed now by this cache, being computed by another live
        process). Keys whose result is already stored are in neither list."""
        mine: list[str] = []
        theirs: list[str] = []
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(keys), 500):
                    chunk = list(keys[start : start + 500])
                    marks = ",".join("?" * len(chunk))
                    done = {
                        k
                        for (k,) in self._conn.execute(
                            f"SELECT key FROM calls WHERE key IN ({marks})", chunk
                        )
                    }
                    held = {
                        k: (owner, host, pid, at)
                        for k, owner, host, pid, at in self._conn.execute(
                            f"SELECT key, owner, host, pid, at FROM claims WHERE key IN ({marks})",
                            chunk,
                        )
                    }
                    take = []
                    for k in chunk:
                        if k in done:
                            continue
                        claim = held.get(k)
                        if claim is None or claim[0] == self.owner or self._stale(*claim[1:], now):
                            take.append(k)
                        else:
                            theirs.append(k)
                    self._conn.executemany(
                        "INSERT OR REPLACE INTO claims (key, owner, host, pid, at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [(k, self.owner, self.host, os.getpid(), now) for k in take],
                    )
                    mine.extend(take)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return mine, theirs

    @_named_if_corrupt
    def held_elsewhere(self, keys: Sequence[str]) -> list[str]:
        """The keys, not yet stored, that another live process has claimed (a read, no claim)."""
        now = time.time()
        out: list[str] = []
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                out += [
                    k
                    for k, owner, host, pid, at in self._conn.execute(
                        f"SELECT key, owner, host, pid, at FROM claims WHERE key IN ({marks})"
                        f" AND key NOT IN (SELECT key FROM calls WHERE key IN ({marks}))",
                        chunk + chunk,
                    )
                    if owner != self.owner and not self._stale(host, pid, at, now)
                ]
        return out

    def release(self, keys: Sequence[str]) -> None:
        """Give up this cache's claims on keys (their calls failed or were abandoned)."""
        if not keys:
            return
        with self._lock:
            self._conn.executemany(
                "DELETE FROM claims WHERE key = ? AND owner = ?", [(k, self.owner) for k in keys]
            )

    def _stale(self, host: str, pid: int, at: float, now: float) -> bool:
        if host == self.host:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True  # the claiming process died
            except PermissionError:
                pass
            else:
                if pid == os.getpid():
                    return False  # another cache object of this process: it is working on it
        return now - at > self.claim_timeout_s

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
