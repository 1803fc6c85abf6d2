"""Finished stage artifacts shared between runs: `<artifact_dir>/<stage>/<fingerprint>/`.

A run that needs a stage whose fingerprint is already in the store links it into its own run
directory instead of recomputing it, so the jobs of a sweep pay for the teacher, the distillation and
(when only evaluation settings vary) the refinement once. Files are hard-linked where the file
system allows (no copy of a large student), else copied; every write in this project replaces files
rather than changing them in place, so a link never sees another run's edits.

No lock is needed for correctness, on one machine or across the nodes of a cluster (where `flock`
may be unsupported or local to each client). A stage is published by building it under a unique
temporary name and renaming that directory onto `<fingerprint>`, which POSIX and NFS do atomically
and only while the name is free: readers see a whole stage or none, and of racing publishers one
wins and the others discard their copy (`shared_stage` counts those recomputations). To keep them
rare, the job making a stage holds a lease, `<fingerprint>.making`, created with O_CREAT|O_EXCL
(atomic on the server for NFS v3+, Lustre, GPFS) and touched every `stale_s / 4` seconds; jobs
wanting the same stage wait while it is fresh and take it over once its holder is dead (at once on
the same host) or its file stopped changing for `stale_s` (another host).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmgcot.utils.sharedfs import break_claim, dead_here

LEASE_STALE_S = (
    300.0  # a lease file unchanged this long (its holder touches it every quarter) is dead
)


@dataclass(frozen=True)
class Outcome:
    """How a job obtained a shared stage: 'fetched' (another job's), 'published' (its own, now in
    the store), or 'discarded' (made it, but another job published first: a recomputation)."""

    how: str
    summary: object


def shared_stage(
    stored: Path,
    out: Path,
    finished: Callable[[Path], bool],
    make: Callable[[], object],
    skip: tuple[str, ...] = (),
    lease: bool = True,
    stale_s: float = LEASE_STALE_S,
    poll_s: float = 0.5,
) -> Outcome:
    """Obtain a stage for `out`: fetch the stored one when `finished(stored)`, else `make()` it in
    `out` and publish it. With `lease`, jobs wanting the same stage wait for the one making it."""
    held = _wait_or_lead(stored, finished, stale_s, poll_s) if lease else None
    try:
        fetched = finished(stored)
        if fetched:
            fetch(stored, out)
        summary = make()
        if fetched:
            return Outcome("fetched", summary)
        if not finished(out):
            return Outcome("unfinished", summary)
        return Outcome("published" if publish(out, stored, skip) else "discarded", summary)
    finally:
        if held is not None:
            held.release()


class Lease:
    """This process's `<fingerprint>.making` file, touched by a thread while it is held."""

    def __init__(self, path: Path, owner: str, stale_s: float):
        self.path, self.owner = path, owner
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._touch, args=(stale_s / 4,), daemon=True)
        self._beat.start()

    def _touch(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                os.utime(self.path)
            except OSError:
                return  # taken over by a job that judged us dead: its copy or ours wins the rename

    def release(self) -> None:
        self._stop.set()
        self._beat.join()
        if _holder(self.path).get("owner") == self.owner:
            self.path.unlink(missing_ok=True)


def _wait_or_lead(
    stored: Path, finished: Callable[[Path], bool], stale_s: float, poll_s: float
) -> Lease | None:
    """None once the stage is published; else a lease for making it (after waiting for a live
    holder)."""
    path = stored.with_name(f"{stored.name}.making")
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    seen: tuple[float, float] | None = None  # (holder's mtime, when we first saw it)
    while not finished(stored):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if not holder:
                continue
            # Staleness by our own clock over an unchanged mtime: no trust in clocks across hosts.
            now = time.monotonic()
            if seen is None or seen[0] != holder["mtime"]:
                seen = (holder["mtime"], now)
            if dead_here(holder) or now - seen[1] > stale_s:
                break_claim(path)
                seen = None
                continue
            time.sleep(poll_s)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump({"owner": owner, "host": socket.gethostname(), "pid": os.getpid()}, handle)
        return Lease(path, owner, stale_s)
    return None


def _holder(path: Path) -> dict:
    try:
        text, mtime = path.read_text(), path.stat().st_mtime_ns
    except FileNotFoundError:
        return {}
    try:
        holder = json.loads(text)
    except ValueError:
        holder = {}  # being written this instant
    return {**holder, "mtime": mtime}


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _clone(src: Path, dst: Path, skip: tuple[str, ...]) -> None:
    shutil.copytree(
        src,
        dst,
        copy_function=_link_or_copy,
        ignore=lambda d, names: [n for n in names if Path(d) == src and n in skip],
    )


def publish(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> bool:
    """Put a finished stage directory into the store, whole or not at all: True if this call
    published it, False if another process had (this copy is then discarded)."""
    if dst.exists():
        return False
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    _clone(src, tmp, skip)
    try:
        # rename(2) of a directory onto a name that exists (non-empty) fails: the first one wins.
        os.rename(tmp, dst)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not dst.exists():
            raise
        return False
    return True


def fetch(src: Path, dst: Path) -> None:
    """Replace a run's stage directory by the stored artifact."""
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    _clone(src, tmp, ())
    if dst.exists():
        old = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dst)
