"""The `lmgcot` command: a thin Hydra entry point around `lmgcot.pipeline.run`."""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import re
import shutil
import sys
from pathlib import Path

import hydra
import hydra._internal.utils as hydra_utils
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from lmgcot.config import register
from lmgcot.config.threads import remember_user_setting, use_threads
from lmgcot.errors import ConfigError, LmgcotError
from lmgcot.utils.http_logs import quiet_http_logs

# Configs ship inside the package, so a wheel install has them too.
CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")
GROUPS = sorted(p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir() and p.name != "hydra")
# The group options extend these schemas; anything composing CONFIG_DIR imports this module first.
register()
quiet_http_logs()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _main(cfg: DictConfig) -> float | None:
    from lmgcot.pipeline import run  # heavy imports after Hydra has parsed --help / --cfg

    try:
        _check_named_options()
        use_threads(cfg.threads)  # before any torch work
        results = run(cfg)
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _drop_empty_run_dir(cfg.paths.output_dir)
        fail(err)
    objective = cfg.get("objective")
    if objective:
        value = lookup(results, str(objective))
        if not isinstance(value, (int, float)):
            from lmgcot.pipeline.context import SUMMARY_STAGES

            stage = str(objective).split(".")[0]
            hint = (
                f" (its {stage} stage, reused from an earlier run, does not record it: `force=true`"
                " remakes it)"
                if stage in SUMMARY_STAGES and results.get(stage)
                else ""
            )
            print(
                f"lmgcot: error: objective={objective}: results.json has no number there{hint}",
                file=sys.stderr,
            )
            sys.exit(2)
        return float(value)
    # A scalar for Hydra sweepers to optimise: the best guided method's EM.
    from lmgcot.eval.methods import METHODS

    # Never an oracle: it chose with the gold test answers.
    guided = [n for n, m in METHODS.items() if m.student and m.uses_large_lm and not m.oracle]
    ems = [m["em"] for name, m in results["methods"].items() if name in guided]
    return max(ems) if ems else None


# Groups whose defaults-list entry is optional: Hydra skips a missing option of theirs silently.
OPTIONAL_GROUPS = ("schedule",)


def _check_named_options() -> None:
    """An option of an optional group named on the command line must exist: `schedule` is
    optional because most dataset and student pairs have no file, so a misspelt one would
    otherwise be dropped without a word."""
    for override in HydraConfig.get().overrides.task:
        key, _, value = override.partition("=")
        if key not in OPTIONAL_GROUPS or value in ("", "null"):
            continue
        folder = Path(CONFIG_DIR) / key
        if not (folder / f"{value}.yaml").is_file():
            options = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
            raise ConfigError(f"{key}={value}: no such option; available: {options} (~{key}: none)")


def lookup(results: dict, path: str):
    """The value at a dotted path of results.json (`refine.val_reward_best`), or None."""
    node = results
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# What a user can fix (a value, a file, the disk), as opposed to a bug in lmgcot: one line, exit 2.
USER_ERRORS = (LmgcotError, OSError, RecursionError)
# Lines of Hydra's and OmegaConf's messages that point at internals rather than at the input.
_NOISE = ("full_key:", "object_type=", "reference_type=", "Set the environment", "See https")


def fail(err: BaseException) -> None:
    """Print `err` as `lmgcot: error: ...` lines (one per bad value) and exit 2."""
    for line in describe(err).splitlines():
        print(f"lmgcot: error: {line}", file=sys.stderr)
    sys.exit(2)


def describe(err: BaseException) -> str:
    """What went wrong with the input, without a traceback: one line (several only for an
    LmgcotError listing several bad values)."""
    if isinstance(err, LmgcotError):
        return str(err)
    if isinstance(err, MissingConfigException):  # an IOError too: before OSError
        first = _flatten(str(err).split("Available options")[0])
        options = ", ".join(err.options or [])
        group = (err.missing_cfg_file or "").rpartition("/")[0]
        return f"{first}; Available options in '{group}': {options}" if options else first
    if isinstance(err, OverrideParseException):
        return f"{err.override}: bad override syntax: {_flatten(err.message)}"
    if isinstance(err, (HydraException, OmegaConfBaseException)):
        cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else None
        # Hydra's "To append to your config use +key=value" leads nowhere: the config is typed,
        # so lmgcot refuses an appended unknown key too. A near group name is the likely intent.
        text = re.sub(r"\nTo append to your config use \S+", "", str(err))
        missing = re.match(r"Could not override '([^'.]+)'", text)
        near = difflib.get_close_matches(missing[1], GROUPS, n=1) if missing else []
        hint = f"\ndid you mean the group '{near[0]}'?" if near else ""
        return _flatten("\n".join(str(e) for e in (text, cause) if e) + hint)
    if isinstance(err, OSError):
        return _describe_os_error(err)
    if isinstance(err, RecursionError):
        return "input nested too deeply to read (RecursionError); set HYDRA_FULL_ERROR=1 for where"
    return _flatten(f"{type(err).__name__}: {err}")


def _describe_os_error(err: OSError) -> str:
    where = f"{err.filename}: " if err.filename else ""
    problem = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        return (
            f"{where}{problem}: free some space (or set paths.output_dir elsewhere) and run the "
            "same command again; finished stages are reused"
        )
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"{where}{problem}: point paths.output_dir (LMGCOT_ROOT/outputs by default), or the "
            "paths.* setting holding this path, at a writable directory"
        )
    return f"{where}{problem}"


def _flatten(text: str) -> str:
    lines = [line.strip() for line in text.split("Config search path")[0].splitlines()]
    return "; ".join(line.rstrip(".") for line in lines if line and not line.startswith(_NOISE))


def _drop_empty_run_dir(output_dir: str) -> None:
    """A run stopped before any work leaves no run directory: while it holds nothing but what Hydra
    wrote (.hydra/, the job's log), remove those, then the directory and its parent (the date
    folder) where left empty. Only Hydra's files go: hydra.run.dir=. must not lose anything."""
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # no Hydra run (the pipeline called from a test's compose)
        return
    run_dir = Path(hydra_cfg.runtime.output_dir)
    ours = {".hydra", f"{hydra_cfg.job.name}.log"}
    if not run_dir.is_dir() or any(p.name not in ours for p in run_dir.iterdir()):
        return
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    with contextlib.suppress(OSError):
        (run_dir / f"{hydra_cfg.job.name}.log").unlink(missing_ok=True)
        run_dir.rmdir()
        # Then the folders above it Hydra made (runs/<date>, up to paths.output_dir): rmdir
        # fails, and they stay, once another run or the cache is in them.
        top = Path(output_dir).resolve()
        for parent in run_dir.resolve().parents:
            if parent != top and top not in parent.parents:
                break
            parent.rmdir()


@contextlib.contextmanager
def _one_line_composition_errors():
    """Hydra reports a composition error (unknown group option or key, bad override syntax, a
    value of the wrong type) in 7+ lines and exits 1; the CLI contract is one line and exit 2.
    Hydra calls its module-level `run_and_report` for every step before the job runs, so the CLI
    swaps in its own for the duration of `main`. HYDRA_FULL_ERROR=1 keeps Hydra's own (with the
    full traceback), and errors that are no input's fault still get Hydra's report."""
    original = hydra_utils.run_and_report

    def run_and_report(func):
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return original(func)
        try:
            return func()
        except (HydraException, OmegaConfBaseException, *USER_ERRORS) as err:
            fail(err)
        except Exception as err:  # a bug: Hydra's report, traceback included
            bug = err

            def reraise():
                raise bug

            return original(reraise)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original


MULTIRUN_FLAGS = ("-m", "--multirun")


def multirun_first(argv: list[str]) -> list[str]:
    """`argv` with -m/--multirun moved before the overrides. Hydra's parser takes the overrides
    as one run of positional arguments, so `lmgcot +sweep=x -m experiment=smoke` would otherwise
    fail with `unrecognized arguments: experiment=smoke`. The flag takes no value: moving it
    changes nothing else."""
    if not any(a in MULTIRUN_FLAGS for a in argv):
        return argv
    return [a for a in argv if a in MULTIRUN_FLAGS][:1] + [
        a for a in argv if a not in MULTIRUN_FLAGS
    ]


# Hydra's modes that print instead of running: one of them, or -m, per command.
SHOW_FLAGS = ("--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")


def check_modes(argv: list[str]) -> None:
    """-m with --cfg/--info is Hydra's ValueError with a traceback: one line instead."""
    shown = [a.split("=", 1)[0] for a in argv if a.split("=", 1)[0] in SHOW_FLAGS]
    if shown and any(a in MULTIRUN_FLAGS for a in argv):
        fail(
            ConfigError(
                f"{shown[0]} shows one job's config and cannot be combined with -m: drop -m "
                "(the sweep's values are under hydra.sweeper.params in `--cfg hydra`)"
            )
        )


# `plan=true` (read here, before Hydra): print what the run would send and cost, send nothing.
PLAN_ON, PLAN_OFF = ("plan=true", "plan=True"), ("plan=false", "plan=False")


def main() -> None:
    if any(a in PLAN_ON for a in sys.argv[1:]):
        from lmgcot.pipeline.plan import main as plan_main

        plan_main(
            [a for a in sys.argv[1:] if a not in PLAN_ON + PLAN_OFF], CONFIG_DIR, fail, USER_ERRORS
        )
        return
    sys.argv[1:] = [a for a in sys.argv[1:] if a not in PLAN_OFF]
    check_modes(sys.argv[1:])
    sys.argv[1:] = multirun_first(sys.argv[1:])
    remember_user_setting()  # before a launcher's workers get an OMP_NUM_THREADS of their own
    with _one_line_composition_errors():
        _main()


if __name__ == "__main__":
    main()
