"""The `anthropic` backend: a Claude model through the Messages API as the frozen large LM.

The API key is read only from the environment variable `ANTHROPIC_API_KEY` (never from a config file,
so it cannot end up in a saved config or a results file); without it construction fails before any
work is done. Each request is one message call with `max_tokens` = `max_new_tokens`, `stop_sequences`
and the system prompt (the request's own, else the backend's `system`). Calls run concurrently
(`max_concurrency`), the SDK retries transient failures (`max_retries`), and `prices` turns token
usage into `cost_usd`.

Sampling settings are NOT sent: the installed SDK (2.x) speaks API version 2026-10-21, whose
`messages.create` has no `temperature` / `top_p` / `top_k` and which answers 400 when a body carries
them. Claude samples with its own defaults, so `temperature: 0` is not greedy here, while n samples
of a prompt are still n separate calls (and cache entries) that come back different.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import anthropic

from lmgcot.errors import BackendError
from lmgcot.llm.base import Completion, Request
from lmgcot.llm.concurrency import ApiLargeLM

API_KEY_ENV = "ANTHROPIC_API_KEY"

log = logging.getLogger(__name__)


class AnthropicLargeLM(ApiLargeLM):
    """Claude via the official `anthropic` SDK's async client."""

    backend = "anthropic"
    _api_errors = (anthropic.APIError,)

    def __init__(self, model: str = "claude-sonnet-4-6", **kwargs: Any):
        """Settings as in `ApiLargeLM`; the key comes from ANTHROPIC_API_KEY only."""
        super().__init__(model, **kwargs)
        key = os.environ.get(API_KEY_ENV, "").strip()
        if not key:
            raise BackendError(
                f"anthropic large LM: set {API_KEY_ENV} in the environment "
                "(the key is never read from a config file)"
            )
        self._api_key = key
        self._warned_sampling = False

    def _make_client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=self._api_key,
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=self.max_retries,
        )

    async def _call(self, client: anthropic.AsyncAnthropic, request: Request) -> Completion:
        p = request.params
        kwargs: dict = {
            "model": self.model,
            "max_tokens": p.max_new_tokens,
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if not self._warned_sampling and (p.temperature != 1.0 or p.top_p != 1.0):
            # Once per backend: the setting is honoured by the other backends, not by this API.
            self._warned_sampling = True
            log.warning(
                "anthropic large LM: the Messages API takes no temperature/top_p; "
                "Claude samples with its defaults (temperature=%s ignored)",
                p.temperature,
            )
        if p.stop:
            kwargs["stop_sequences"] = list(p.stop)
        system = self.system_for(p)
        if system:
            kwargs["system"] = system
        message = await client.messages.create(**kwargs)
        text = "".join(
            block.text for block in message.content if getattr(block, "type", None) == "text"
        )
        usage = message.usage
        return Completion(text, int(usage.input_tokens or 0), int(usage.output_tokens or 0))
