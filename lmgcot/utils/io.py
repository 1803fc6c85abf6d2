"""Atomic file writes and JSONL helpers: a killed process never leaves a half-written artifact."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    # /proc reads it without changing it; os.umask can only be read by setting it, which would
    # briefly open up files another thread creates meanwhile (so only where /proc is missing).
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open()` gives a new file under the process's umask (0644 under umask 022)."""
    return 0o666 & ~_read_umask()


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w"):
    """A file object for `path` that replaces it only once written in full: a temporary file
    beside it, fsynced, then renamed over it. On any failure the old file stays and the
    temporary one goes; an OSError names `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; the artifact must read like any file the user writes.
        os.fchmod(fd, file_mode())
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise with_filename(err, path) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    with atomic_file(path) as f:
        f.write(text)
    return Path(path)


def with_filename(err: OSError, path: str | Path) -> OSError:
    """`err` naming `path` when it names no file (a failed write() or fsync does not): a full
    disk is reported with the artifact it stopped."""
    if err.filename is not None or err.errno is None:
        return err
    return type(err)(err.errno, err.strerror, str(path))


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Append rows to a log file in one write (a killed process leaves at most a torn last line;
    readers of such logs skip it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def replace_dir(tmp_dir: str | Path, final_dir: str | Path) -> Path:
    """Move a fully written directory into place, replacing any older one. Its files get the
    user's umask (transformers writes model.safetensors 0600 through a temporary file)."""
    final_dir = Path(final_dir)
    mode = file_mode()
    dir_mode = mode | ((mode & 0o444) >> 2)  # a directory readable by someone is searchable too
    os.chmod(tmp_dir, dir_mode)
    for root, dirs, files in os.walk(tmp_dir):
        for name in dirs:
            os.chmod(os.path.join(root, name), dir_mode)
        for name in files:
            os.chmod(os.path.join(root, name), mode)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(tmp_dir, final_dir)
    return final_dir
