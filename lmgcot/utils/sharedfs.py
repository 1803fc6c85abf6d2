"""Which kind of file system holds the shared state (call cache, artifact store), and what follows.

`local`: one machine's disk; SQLite in WAL mode is safe for every process on it. `network`: a
file system that several machines mount (NFS, Lustre, GPFS, ...), where SQLite's WAL index (shared
memory) and its POSIX locks cannot be trusted, so the call cache keeps one append-only file per
writer instead (`lmgcot.llm.cache_shards`). The artifact store needs no lock in either mode: it
publishes a stage by renaming a complete directory into place. Some FUSE mounts of object stores
cannot rename a directory atomically (they copy, then delete): nothing shared is safe there, and a
run refuses them before any paid work unless told otherwise. See docs/cluster.md.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from lmgcot.errors import ConfigError

SETTING = "paths.shared_fs"
MODES = ("auto", "local", "network")

# Kernel names (/proc/self/mountinfo) of file systems that more than one machine mounts.
NETWORK_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "lustre",
        "gpfs",
        "cifs",
        "smb3",
        "smbfs",
        "beegfs",
        "ceph",
        "glusterfs",
        "afs",
        "panfs",
        "wekafs",
        "9p",
        "orangefs",
        "pvfs2",
    }
)
# Object stores behind FUSE: a directory rename is a copy and a delete, so readers can see half of it.
UNSAFE_TYPES = frozenset(
    {
        "fuse.s3fs",
        "fuse.goofys",
        "fuse.gcsfuse",
        "fuse.rclone",
        "fuse.blobfuse",
        "fuse.blobfuse2",
        "fuse.mountpoint-s3",
        "fuse.geesefs",
    }
)


def fs_type(path: str | Path, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The kernel's name for the file system holding `path` (or the nearest existing ancestor):
    'ext4', 'nfs4', 'fuse.s3fs', ...; 'unknown' where the mount table cannot be read (not Linux)."""
    # The nearest existing ancestor resolves links; the part not made yet is taken as written.
    probe, tail = Path(os.path.abspath(path)), []
    while not probe.exists() and probe != probe.parent:
        tail.append(probe.name)
        probe = probe.parent
    real = os.path.join(os.path.realpath(probe), *reversed(tail))
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return "unknown"
    best, kind = "", "unknown"
    for line in lines:
        # "<id> <parent> <dev> <root> <mount point> <options> [optional...] - <type> <source> ..."
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or not tail:
            continue
        point = _unescape(fields[4])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, tail[0]
    return kind


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in octal.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def is_network(kind: str) -> bool:
    return kind in NETWORK_TYPES or kind.startswith("fuse.") or kind == "fuseblk"


def shared_mode(path: str | Path, setting: str = "auto") -> str:
    """'local' or 'network' for shared state under `path`: the setting when it names one, else
    what the file system is. Unknown FUSE mounts count as network: the safe side."""
    if setting not in MODES:
        raise ConfigError(f"{SETTING}={setting!r}: must be one of {', '.join(MODES)}")
    if setting != "auto":
        return setting
    return "network" if is_network(fs_type(path)) else "local"


def check_shared_paths(paths: dict[str, str | Path | None], setting: str = "auto") -> None:
    """Refuse, in one line, shared state on a file system where no mode keeps it safe; a forced
    setting is taken as the user's word."""
    if setting not in MODES:
        raise ConfigError(f"{SETTING}={setting!r}: must be one of {', '.join(MODES)}")
    if setting != "auto":
        return
    for key, path in paths.items():
        if not path:
            continue
        kind = fs_type(path)
        if kind in UNSAFE_TYPES:
            raise ConfigError(
                f"{key}={path} is on {kind}, an object store where renaming a directory is a copy "
                "and a delete, so the call cache and the artifact store cannot be kept whole there: "
                f"point {key} at a local disk or a POSIX network file system (NFS, Lustre, GPFS), "
                f"or set {SETTING}=network to use it anyway"
            )


def dead_here(holder: dict, host: str | None = None) -> bool:
    """Whether an exclusive file's holder ({"host", "pid"}) is a process of this host that has
    ended; a holder on another host is never judged dead here."""
    if holder.get("host") != (host or socket.gethostname()) or "pid" not in holder:
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def break_claim(path: Path) -> None:
    """Remove a dead holder's exclusive file: moved aside first, so that of several processes
    taking it over one rename succeeds and none removes a newer holder's file."""
    aside = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.stale")
    try:
        os.rename(path, aside)
        os.unlink(aside)
    except FileNotFoundError:
        pass
