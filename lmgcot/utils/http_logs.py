"""Quiet the HTTP libraries the API SDKs use: they log every request and retry at INFO (117 lines
for 40 calls), which buries the pipeline's own log; their warnings still show."""

from __future__ import annotations

import logging

# Top-level logger names, matched as prefixes: an SDK release may move to a renamed fork
# (the anthropic SDK sends through `httpx2`, whose connections log as `httpcore2`).
HTTP_LOGGERS = (
    "httpx",
    "httpcore",
    "h11",
    "h2",
    "hpack",
    "urllib3",
    "requests",
    "aiohttp",
    "anthropic",
    "openai",
)


def quiet_http_logs() -> None:
    """Raise the HTTP libraries' and SDKs' loggers to WARNING: the known names (placeholders
    until the library is imported) and every logger created so far whose package starts with
    one of them. Called again once an SDK is imported, for the loggers it brought."""
    known = logging.root.manager.loggerDict
    names = set(HTTP_LOGGERS) | {n for n in known if n.split(".")[0].startswith(HTTP_LOGGERS)}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
