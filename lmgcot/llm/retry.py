"""Retries of API calls sized for hours-long stages: exponential backoff with jitter, `retry-after`
honoured, and a classification of errors into retry / fail this request / stop everything.

The SDK clients are built with `max_retries=0` and this loop does the retrying, so the backoff is
ours to set (a test sets it tiny) and the count is the one in the config. With a fault rate f per
attempt, a request fails after `max_retries` + 1 tries with probability f ** (max_retries + 1): at
f = 0.3 and the default 12 retries that is 1.6e-7, i.e. 0.16 % that any of 10,000 requests fails.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

R = TypeVar("R")

# Statuses that another try can fix: timeout, conflict, rate limit, server errors (incl. 529).
RETRY_STATUSES = frozenset({408, 409, 429})
# Statuses that no request can get past (the key, the account, the model): every request stops.
FATAL_STATUSES = frozenset({401, 403, 404})
# Words in a 400/403 message that mean an account problem (credit, spend limit, billing).
BILLING_WORDS = ("credit", "spend", "billing")
# A server asking for a longer wait than this is not waited for beyond it, per try.
MAX_RETRY_AFTER_S = 600.0


@dataclass(frozen=True)
class RetryPolicy:
    """`max_retries` tries after the first; try k waits min(max_s, base_s * 2**k) times a random
    factor in [0.5, 1] (jitter spreads out clients that failed together), or what the server's
    `retry-after` asks (up to MAX_RETRY_AFTER_S)."""

    max_retries: int = 12
    base_s: float = 0.5
    max_s: float = 60.0

    def backoff(self, retry: int, err: BaseException | None = None) -> float:
        asked = retry_after_s(err)
        if asked is not None:
            return min(max(asked, 0.0), MAX_RETRY_AFTER_S)
        return min(self.max_s, self.base_s * 2**retry) * random.uniform(0.5, 1.0)


def status_of(err: BaseException) -> int | None:
    return getattr(err, "status_code", None)


def message_of(err: BaseException) -> str:
    """The API's own message, on one line."""
    body = getattr(err, "body", None)
    text = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            text = str(inner["message"])
        elif isinstance(inner, str) and inner:
            text = inner
    if text is None:
        text = str(getattr(err, "message", None) or err) or type(err).__name__
    return " ".join(text.split())


def is_fatal(err: BaseException) -> bool:
    """An error that every other request would hit too: bad key, no permission, no credit, no such
    model. The stage stops at once rather than sending the rest."""
    status = status_of(err)
    if status in FATAL_STATUSES:
        return True
    return status == 400 and any(w in message_of(err).lower() for w in BILLING_WORDS)


def is_retryable(err: BaseException) -> bool:
    status = status_of(err)
    if status is None:
        return True  # connection refused or reset, timeout: the SDK's connection errors
    return status in RETRY_STATUSES or status >= 500


def retry_after_s(err: BaseException | None) -> float | None:
    """Seconds the server asked to wait (`retry-after-ms`, `retry-after` seconds or date)."""
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                return email.utils.mktime_tz(parsed) - time.time()
    return None


async def with_retries(
    policy: RetryPolicy,
    attempt: Callable[[], Awaitable[R]],
    retry_on: tuple[type[BaseException], ...],
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> R:
    """`attempt()` until it succeeds, an error is not retryable, or the retries are spent (the last
    error is raised, with `.retries` set to the number of retries made)."""
    retry = 0
    while True:
        try:
            return await attempt()
        except retry_on as err:
            if retry >= policy.max_retries or is_fatal(err) or not is_retryable(err):
                err.retries = retry  # type: ignore[attr-defined]
                raise
            await sleep(policy.backoff(retry, err))
            retry += 1
