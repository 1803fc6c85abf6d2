"""Keeping API keys out of what a run writes: saved configs, logs, W&B.

Keys are read from the environment only, so they should never reach a config. If one does anyway (a
`+large_lm.api_key=...` override, a key pasted into a field), what the run saves is redacted: values
under key-like names (`api_key`, `token`, `secret`, `password`), strings that look like API keys
(`sk-...`, `hf_...`), and the current values of the secret environment variables, wherever they appear.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import yaml

from lmgcot.utils.io import atomic_write_text

SECRET_ENV_VARS = (
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "WANDB_API_KEY",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
)
REDACTED = "***REDACTED***"
# A config key whose value is a secret (`max_new_tokens` is not: it ends in "tokens").
_SECRET_NAME = re.compile(r"(?:^|[._-])(api_?key|secret|password|passwd|token)$", re.IGNORECASE)
# Well-known key formats: Anthropic and OpenAI (`sk-...`), Hugging Face (`hf_...`).
_SECRET_VALUE = re.compile(r"\b(?:sk-[A-Za-z0-9_-]{8,}|hf_[A-Za-z0-9]{16,})")
# An override or a `name=value` string whose name is secret-like.
_ASSIGNMENT = re.compile(r"^(?P<name>[+~]*[\w.\-/]+)=(?P<value>.+)$", re.DOTALL)


def env_secrets() -> list[str]:
    """The current values of the secret environment variables (short ones would redact noise)."""
    values = (os.environ.get(name, "").strip() for name in SECRET_ENV_VARS)
    return sorted({v for v in values if len(v) >= 8}, key=len, reverse=True)


def is_secret_name(name: Any) -> bool:
    return isinstance(name, str) and bool(_SECRET_NAME.search(name))


def redact_text(text: str) -> str:
    for value in env_secrets():
        text = text.replace(value, REDACTED)
    return _SECRET_VALUE.sub(REDACTED, text)


def redact(obj: Any) -> Any:
    """A copy of a plain config structure (dicts, lists, strings) with secrets replaced."""
    if isinstance(obj, dict):
        return {
            k: (REDACTED if is_secret_name(k) and v not in (None, "") else redact(v))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        m = _ASSIGNMENT.match(obj)
        if m and is_secret_name(m.group("name")):
            return f"{m.group('name')}={REDACTED}"
        return redact_text(obj)
    return obj


def redact_yaml_files(directory: Path) -> list[Path]:
    """Rewrite (atomically) every YAML file in `directory` that holds a secret; returns those."""
    changed = []
    if not directory.is_dir():
        return changed
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            new = redact_text(text)
        else:
            clean = redact(data)
            new = text if clean == data else yaml.safe_dump(clean, sort_keys=False)
        if new != text:
            atomic_write_text(path, new)
            changed.append(path)
    return changed


class RedactingFilter(logging.Filter):
    """Redacts secrets from every record a handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redact_logs() -> None:
    """Put a `RedactingFilter` on every handler of the root logger (Hydra's console and file)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
