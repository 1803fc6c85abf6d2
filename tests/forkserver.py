"""`lmgcot` runs for the tests, each in a child forked from one process that has paid for the
imports (torch, Lightning, transformers: ~10 s of CPU per process on two cores, most of a smoke
run's time).

A child is what the console script is, less the imports: `lmgcot.cli.main()` with its own argv,
cwd, environment (replaced whole), stdin from /dev/null, stdout/stderr files and exit status, in a
process group of its own so that a hang is killed with whatever it started. The server forks one
child at a time and lives as long as the pytest worker that started it.
`LMGCOT_TEST_SUBPROCESS=1` runs every case as a fresh subprocess instead (the console script).
tests/test_package.py runs the installed console script itself.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

_SERVER = r"""
import json, os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from forkserver import run_child
import lmgcot.cli, lmgcot.pipeline  # the imports every child inherits
replies = sys.stdout
for line in sys.stdin:
    case = json.loads(line)
    replies.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        run_child(case)
    deadline = time.monotonic() + case["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:  # bounds a hang only
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            code = None
            break
        time.sleep(0.02)
    print(json.dumps(code), file=replies, flush=True)
"""
TESTS = str(Path(__file__).resolve().parent)


def run_child(case: dict) -> NoReturn:
    """In a forked child: `lmgcot.cli.main()` with the case's cwd, environment (replaced whole),
    argv and stdout/stderr files, stdin from /dev/null, in a process group of its own; exits with
    lmgcot's status without returning to the forking process's code."""
    import traceback

    code = 1
    try:
        os.setpgid(0, 0)
        os.chdir(case["cwd"])
        os.environ.clear()
        os.environ.update(case["env"])
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        for fd, path in ((1, case["stdout"]), (2, case["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        sys.argv = ["lmgcot", *case["args"]]
        code = 0
        import lmgcot.cli

        lmgcot.cli.main()
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


_server: subprocess.Popen | None = None


def _stop() -> None:
    if _server is not None and _server.poll() is None:
        _server.stdin.close()
        _server.wait(timeout=30)


def _started(env: dict[str, str]) -> subprocess.Popen:
    global _server
    if _server is None or _server.poll() is not None:
        _server = subprocess.Popen(
            [sys.executable, "-c", _SERVER, TESTS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        atexit.register(_stop)
    return _server


def run(
    program: list[str], args: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """`lmgcot *args` as subprocess.run(program + args, capture_output=True, text=True) would
    report it; subprocess.TimeoutExpired past `timeout`."""
    command = [*program, *args]
    if os.environ.get("LMGCOT_TEST_SUBPROCESS") == "1":
        return subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    server = _started(env)
    with tempfile.TemporaryDirectory(prefix="lmgcot-fork-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        case = {
            "cwd": str(cwd),
            "env": env,
            "args": list(args),
            "stdout": str(out),
            "stderr": str(err),
            "timeout": timeout,
        }
        server.stdin.write(json.dumps(case) + "\n")
        server.stdin.flush()
        reply = server.stdout.readline()
        if not reply:
            raise RuntimeError("the lmgcot fork server died")
        code = json.loads(reply)
        if code is None:
            raise subprocess.TimeoutExpired(command, timeout)
        return subprocess.CompletedProcess(command, code, out.read_text(), err.read_text())
