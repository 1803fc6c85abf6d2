"""Finished stage artifacts shared between runs: `<artifact_dir>/<stage>/<fingerprint>/`.

A run that needs a stage whose fingerprint is already in the store links it into its own run
directory instead of recomputing it, so the jobs of a sweep pay for the teacher, the distillation and
(when only evaluation settings vary) the refinement once. A lock file per fingerprint makes jobs that
want the same artifact at the same time wait for the one computing it. Files are hard-linked where
the file system allows (no copy of a large student), else copied; every write in this project
replaces files rather than changing them in place, so a link never sees another run's edits.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock held while the block runs; other processes wait for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


def publish(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """Put a finished stage directory into the store, whole or not at all."""
    if dst.exists():
        return
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    _clone(src, tmp, skip)
    try:
        os.replace(tmp, dst)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # someone else published it first
        if not dst.exists():
            raise


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
