"""Errors that stop a run with one clear line instead of a traceback."""


class LmgcotError(Exception):
    """Base class: the CLI prints `str(err)` on one line and exits non-zero."""


class DataError(LmgcotError):
    """A dataset file or record is malformed. The message names the file, the record and the problem."""

    def __init__(self, source: str, problem: str, record: str | None = None):
        where = f"{source}: record {record}" if record is not None else source
        super().__init__(f"{where}: {problem}")
        self.source, self.record, self.problem = source, record, problem


class ConfigError(LmgcotError):
    """A configuration value is invalid; the message names the key and what is allowed."""


class BackendError(LmgcotError):
    """A large-LM backend cannot serve a request (unreadable prompt, failed call, missing key)."""
