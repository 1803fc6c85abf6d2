"""The call cache on a network file system: one append-only file per writer, read across all.

SQLite in WAL mode needs every process on one host (its index is shared memory), and its rollback
journal needs POSIX locks that NFS set-ups often get wrong, so across machines no process writes a
file another one writes. Beside the cache file `llm_calls.sqlite` (the base: read, never written
here) each writer process appends to its own `llm_calls.shards/<host>-<pid>-<id>.jsonl`, one line
per reply, written with one `write` as it arrives: a kill loses only the replies that had not
arrived. The file is fsynced before the job ends its claims on those calls (below), so a job on
another machine waiting for them reads them from the server. Every line carries a checksum of
itself, so a reader never takes a torn or not-yet-visible line for a reply; it skips it and reads
it again later.

Work in flight is claimed by creating `llm_calls.claims/<key>` with O_CREAT|O_EXCL, which NFS (v3
and later), Lustre and GPFS perform atomically on the server: of two jobs that want the same call,
exactly one pays and the other waits for its line. A claim of a dead process is taken over (at
once on the same host, after `claim_timeout_s` from another). `merge` folds finished shards into
the base, between sweeps (docs/cluster.md).
"""

from __future__ import annotations

import argparse
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

from lmgcot.llm.cache import CacheCorrupt, CacheUnusable, CallCache, select_calls
from lmgcot.utils.sharedfs import break_claim, dead_here, shared_mode

CLOSED = {"closed": True}  # the last line of a shard whose writer closed it


def shard_dir(base: Path) -> Path:
    return base.with_suffix(".shards")


def claim_dir(base: Path) -> Path:
    return base.with_suffix(".claims")


def _line(record: dict) -> bytes:
    payload = json.dumps(record, ensure_ascii=True, separators=(",", ":"))
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return f"{digest}\t{payload}\n".encode()


def _parse(line: bytes) -> dict | None:
    """The record of a whole, intact line; None for a torn or damaged one."""
    digest, sep, payload = line.partition(b"\t")
    if not sep or hashlib.sha256(payload).hexdigest()[:16].encode() != digest:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return None


class ShardedCallCache:
    """`CallCache`'s interface (get_many, put_many, claim, held_elsewhere, release, check, len,
    close) over a base file plus per-writer shards; safe for processes on different machines."""

    mode = "network"

    def __init__(self, path: str | Path, claim_timeout_s: float = 3600.0, read_only: bool = False):
        self.path = Path(path)
        self.shards = shard_dir(self.path)
        self.claims = claim_dir(self.path)
        self.claim_timeout_s = float(claim_timeout_s)
        self.host = socket.gethostname()
        self.owner = f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.read_only = read_only
        if not read_only:
            self.shards.mkdir(parents=True, exist_ok=True)
            self.claims.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._index: dict[str, tuple[str, int, int]] = {}  # key -> (shard, offset, length)
        self._read_to: dict[str, int] = {}  # shard -> bytes read up to the first bad line
        self._bad: dict[str, int] = {}  # shard -> damaged lines at the last read
        self._fd: int | None = None  # this writer's shard, opened at its first reply
        self._unsynced = False  # replies written since the last fsync
        self._mine = f"{self.owner}.jsonl"
        self._held: set[str] = set()  # keys this cache has claimed
        self._known: set[str] = set()  # shards of writers seen holding claims
        self._base: sqlite3.Connection | None = None
        self._base_id: tuple[int, int] | None = None

    @classmethod
    def reader(cls, path: str | Path) -> ShardedCallCache | None:
        """A view that reads and never writes (a plan); None when there is nothing to read."""
        path = Path(path)
        if not path.is_file() and not shard_dir(path).is_dir():
            return None
        return cls(path, read_only=True)

    # -- reading -------------------------------------------------------------------------------

    def _open_base(self) -> None:
        """(Re)open the base read-only and lock-free: nothing writes it while jobs run, and `merge`
        replaces it by a rename, which a changed inode shows."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._close_base()
            return
        ident = (st.st_ino, st.st_mtime_ns)
        if ident == self._base_id and self._base is not None:
            return
        self._close_base()
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise CacheUnusable(
                f"call cache {self.path}: a local-mode run left replies in {wal.name}, which a "
                "network file system cannot share; fold them in once, with no job running: "
                f"python -m lmgcot.llm.cache_shards merge {self.path.parent}"
            )
        try:
            self._base = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro&immutable=1",
                uri=True,
                check_same_thread=False,
            )
            self._base.execute("SELECT 1 FROM calls LIMIT 1").fetchall()
        except sqlite3.DatabaseError as err:
            self._close_base()
            raise CacheCorrupt(
                f"call cache {self.path} is unreadable ({' '.join(str(err).split())}): move it "
                f"aside (mv {self.path} {self.path}.corrupt); the shards in {self.shards} stay"
            ) from None
        self._base_id = ident

    def _close_base(self) -> None:
        if self._base is not None:
            self._base.close()
        self._base, self._base_id = None, None

    def _refresh(self) -> None:
        """Read what the shards gained since the last look (new lines, new shards, gone shards)."""
        self._open_base()
        try:
            listed = {p.name for p in os.scandir(self.shards) if p.name.endswith(".jsonl")}
        except FileNotFoundError:
            listed = set()
        # Also the shards of writers whose claims we saw: opened by name, they are read even while
        # an NFS client's cached directory listing does not show them yet.
        gone = set()
        for name in sorted(listed | self._known | set(self._read_to)):
            if not self._read_shard(name) and name in self._read_to:
                gone.add(name)
        if gone:  # merged into the base
            self._index = {k: v for k, v in self._index.items() if v[0] not in gone}
            for name in gone:
                self._read_to.pop(name, None)
                self._bad.pop(name, None)
                self._known.discard(name)

    def _read_shard(self, name: str) -> bool:
        """Index the shard's new lines; False if it does not exist (yet, or any more)."""
        start = self._read_to.get(name, 0)
        try:
            with open(self.shards / name, "rb") as handle:
                handle.seek(start)
                data = handle.read()
        except FileNotFoundError:
            return False
        pos, good_to, bad = 0, start, 0
        while True:
            end = data.find(b"\n", pos)
            if end < 0:
                break  # a line still being written (or torn by a crash): not a reply yet
            record = _parse(data[pos:end])
            if record is None:
                bad += 1
            else:
                if "key" in record:
                    self._index.setdefault(record["key"], (name, start + pos, end - pos))
                if not bad:
                    good_to = start + end + 1
            pos = end + 1
        # Re-read from the first damaged line next time: on NFS a line can show as zeros until
        # the writer's later bytes reach the server.
        self._read_to[name] = good_to
        self._bad[name] = bad
        return True

    def _values(self, hits: dict[str, tuple[str, int, int]]) -> dict[str, dict]:
        by_shard: dict[str, list[tuple[str, int, int]]] = {}
        for key, (name, offset, length) in hits.items():
            by_shard.setdefault(name, []).append((key, offset, length))
        out: dict[str, dict] = {}
        for name, rows in by_shard.items():
            try:
                with open(self.shards / name, "rb") as handle:
                    for key, offset, length in rows:
                        handle.seek(offset)
                        record = _parse(handle.read(length))
                        if record is not None:
                            out[key] = record["value"]
            except FileNotFoundError:
                continue  # merged meanwhile: the base has it now
        return out

    def _from_base(self, keys: Sequence[str]) -> dict[str, dict]:
        if self._base is None or not keys:
            return {}
        return select_calls(self._base, keys)

    def get_many(self, keys: Sequence[str]) -> dict[str, dict]:
        with self._lock:
            self._refresh()
            found = self._values({k: self._index[k] for k in keys if k in self._index})
            rest = [k for k in keys if k not in found]
            try:
                found.update(self._from_base(rest))
            except sqlite3.DatabaseError:
                # `merge` replaced the base under an open handle (a stale NFS handle): reopen once.
                self._close_base()
                self._refresh()
                found.update(self._from_base(rest))
                found.update(self._values({k: self._index[k] for k in rest if k in self._index}))
            return found

    def get(self, key: str) -> dict | None:
        return self.get_many([key]).get(key)

    # -- writing -------------------------------------------------------------------------------

    def put_many(self, items: Iterable[tuple[str, dict]]) -> None:
        records = [{"key": k, "value": v} for k, v in items]
        if not records:
            return
        with self._lock:
            if self._fd is None:
                self._fd = os.open(
                    self.shards / self._mine, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
                )
            offset = os.fstat(self._fd).st_size
            lines = [_line(r) for r in records]
            try:
                # One write, at once: a killed process's data is still flushed by its kernel; a
                # kill leaves either the whole batch or a torn tail that readers skip.
                os.write(self._fd, b"".join(lines))
                self._unsynced = True
            except OSError as err:
                raise CacheUnusable(
                    f"call cache {self.shards / self._mine}: {err} (is paths.cache_dir writable, "
                    "with space left?)"
                ) from None
            for record, line in zip(records, lines):
                self._index.setdefault(record["key"], (self._mine, offset, len(line) - 1))
                offset += len(line)
            self._read_to.setdefault(self._mine, 0)

    # -- claims --------------------------------------------------------------------------------

    def claim(self, keys: Sequence[str]) -> tuple[list[str], list[str]]:
        """(claimed now by this cache, being computed by another live process); keys already
        stored are in neither."""
        with self._lock:
            self._refresh()
            stored = self._stored(keys)
            mine, theirs = [], []
            for key in keys:
                if key in stored:
                    continue
                (mine if self._take(key) else theirs).append(key)
            # Stored by another process between the look above and our claim: not ours to pay.
            if mine:
                self._refresh()
                done = self._stored(mine)
                self._drop_claims(done)
                mine = [k for k in mine if k not in done]
            return mine, theirs

    def _stored(self, keys: Sequence[str]) -> set[str]:
        """Which keys have a reply, in a shard or the base (as of the last refresh)."""
        indexed = {k for k in keys if k in self._index}
        return indexed | set(self._from_base([k for k in keys if k not in indexed]))

    def _take(self, key: str) -> bool:
        path = self.claims / key
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder(path)
                if holder is None:
                    continue  # released meanwhile
                if holder.get("owner") == self.owner:
                    self._held.add(key)
                    return True
                if not self._stale(holder):
                    return False
                # Move the dead claim aside; of several takers one rename succeeds.
                break_claim(path)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump({"owner": self.owner, "host": self.host, "pid": os.getpid()}, handle)
            self._held.add(key)
            return True
        return False

    def _holder(self, path: Path) -> dict | None:
        try:
            text = path.read_text()
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
        except ValueError:
            holder = {}  # being written this instant, or by a writer killed at that instant
        if "owner" in holder:
            self._known.add(f"{holder['owner']}.jsonl")
        holder["at"] = mtime
        return holder

    def _stale(self, holder: dict) -> bool:
        return dead_here(holder, self.host) or time.time() - holder["at"] > self.claim_timeout_s

    def held_elsewhere(self, keys: Sequence[str]) -> list[str]:
        with self._lock:
            self._refresh()
            stored = self._stored(keys)
            out = []
            for key in keys:
                if key in stored or key in self._held:
                    continue
                holder = self._holder(self.claims / key)
                if holder is not None and not self._stale(holder):
                    out.append(key)
            return out

    def release(self, keys: Sequence[str]) -> None:
        with self._lock:
            self._drop_claims(keys)

    def _drop_claims(self, keys: Iterable[str]) -> None:
        """End claims, after an fsync of the replies written: a job on another machine that
        waited for a claim to end then finds the reply on the server, not only in our page cache.
        One fsync per chunk, not per reply, so a busy disk does not hold replies in the socket."""
        keys = [k for k in keys if k in self._held]
        if keys and self._unsynced and self._fd is not None:
            os.fsync(self._fd)
            self._unsynced = False
        for key in keys:
            if key in self._held:
                self._held.discard(key)
                try:
                    os.unlink(self.claims / key)
                except FileNotFoundError:
                    pass

    # -- housekeeping --------------------------------------------------------------------------

    def check(self) -> str:
        """'ok', or what is damaged: the base's integrity check and every shard's lines (a torn
        last line of a killed writer is not damage: it was never a reply)."""
        with self._lock:
            self._read_to.clear()
            self._index.clear()
            self._refresh()
            problems = []
            if self._base is not None:
                verdict = self._base.execute("PRAGMA integrity_check").fetchone()[0]
                if verdict != "ok":
                    problems.append(f"{self.path.name}: {verdict}")
            problems += [f"{name}: {n} damaged lines" for name, n in self._bad.items() if n]
            return "; ".join(problems) or "ok"

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            keys = list(self._index)
            in_base = len(self._from_base(keys))
            base = (
                self._base.execute("SELECT COUNT(*) FROM calls").fetchone()[0] if self._base else 0
            )
            return base + len(keys) - in_base

    def close(self) -> None:
        with self._lock:
            self._drop_claims(list(self._held))
            if self._fd is not None:
                os.write(self._fd, _line(CLOSED))
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            self._close_base()


def open_call_cache(path: str | Path, shared_fs: str = "auto", **kwargs):
    """The call cache at `path` in the mode its file system needs (`paths.shared_fs`: auto,
    local, network): this SQLite file for one machine, per-writer shards across machines."""
    if shared_mode(Path(path).parent, shared_fs) == "network":
        return ShardedCallCache(path, **{k: v for k, v in kwargs.items() if k != "timeout_s"})
    return CallCache(path, **kwargs)


def open_cache_reader(path: str | Path, shared_fs: str = "auto"):
    """A read-only view of the cache at `path` in its file system's mode; None when there is none."""
    if shared_mode(Path(path).parent, shared_fs) == "network":
        return ShardedCallCache.reader(path)
    return CallCache.reader(path)


def merge(cache_dir: str | Path, name: str = "llm_calls.sqlite", idle_s: float = 3600.0) -> str:
    """Fold finished shards (closed, or their writer dead on this host, or untouched for `idle_s`)
    into the base: a new base is written beside it and renamed over it, then those shards go.
    Meant for when no job uses the cache (jobs still running keep working, but a job on another
    machine may need a moment to notice the new base). Returns a one-line account."""
    base = Path(cache_dir) / name
    shards = shard_dir(base)
    host = socket.gethostname()
    done, left = [], []
    for path in sorted(shards.glob("*.jsonl")) if shards.is_dir() else []:
        data = path.read_bytes()
        closed = data.endswith(_line(CLOSED))
        writer = path.stem.rsplit("-", 2)
        dead_here = False
        if len(writer) == 3 and writer[0] == host and writer[1].isdigit():
            try:
                os.kill(int(writer[1]), 0)
            except ProcessLookupError:
                dead_here = True
            except PermissionError:
                pass
        idle = time.time() - path.stat().st_mtime > idle_s
        (done if closed or dead_here or idle else left).append(path)
    tmp = base.with_name(f".{base.name}.{uuid.uuid4().hex[:8]}.merge")
    if base.exists():
        # SQLite's own copy: it also folds in a -wal file that a killed local-mode run left.
        src = sqlite3.connect(str(base))
        dst = sqlite3.connect(str(tmp))
        src.backup(dst)
        src.close()
    else:
        dst = sqlite3.connect(str(tmp))
    dst.execute("PRAGMA journal_mode=DELETE")
    dst.execute(
        "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
        " created REAL DEFAULT (julianday('now')))"
    )
    dst.execute(
        "CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL,"
        " host TEXT NOT NULL, pid INTEGER NOT NULL, at REAL NOT NULL)"
    )
    before = dst.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    damaged = 0
    with dst:
        for path in done:
            for raw in path.read_bytes().split(b"\n"):
                record = _parse(raw) if raw else None
                if record is None:
                    damaged += bool(raw)
                    continue
                if "key" in record:
                    dst.execute(
                        "INSERT OR IGNORE INTO calls (key, value) VALUES (?, ?)",
                        (record["key"], json.dumps(record["value"], ensure_ascii=False)),
                    )
    after = dst.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    dst.close()
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, base)
    for suffix in ("-wal", "-shm"):
        base.with_name(base.name + suffix).unlink(missing_ok=True)
    for path in done:
        path.unlink()
    cleared = _clear_claims(base)
    return (
        f"merged {len(done)} shards into {base} ({after - before} new calls, {after} in all"
        f"{f', {damaged} damaged lines skipped' if damaged else ''}); "
        f"{len(left)} shards of running (or recently active) writers left as they are; "
        f"{cleared} finished claims cleared"
    )


def _clear_claims(base: Path) -> int:
    """Remove the claims whose reply is stored (a writer killed between storing and unclaiming)
    or whose holder is dead; a live claim stays."""
    claims = claim_dir(base)
    if not claims.is_dir():
        return 0
    view = ShardedCallCache(base, read_only=True)
    names = [p.name for p in claims.iterdir() if "." not in p.name]
    stored = set(view.get_many(names))
    cleared = 0
    for name in names:
        holder = view._holder(claims / name)
        if holder is not None and (name in stored or view._stale(holder)):
            (claims / name).unlink(missing_ok=True)
            cleared += 1
    view.close()
    return cleared


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m lmgcot.llm.cache_shards",
        description="Housekeeping for a call cache on a network file system (docs/cluster.md).",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="fold finished writers' shards into the base cache file")
    m.add_argument("cache_dir", help="paths.cache_dir (outputs/cache by default)")
    m.add_argument(
        "--idle-s",
        type=float,
        default=3600.0,
        help="a shard untouched this long counts as finished (writers on other machines)",
    )
    args = ap.parse_args(argv)
    print(merge(args.cache_dir, idle_s=args.idle_s))


if __name__ == "__main__":
    main()
