"""The `anthropic` backend: a Claude model through the Messages API as the frozen large LM.

The API key is read only from the environment variable `ANTHROPIC_API_KEY` (never from a config file,
so it cannot end up in a saved config or a results file); without it construction fails before any
work is done. Each request is one message with `max_tokens` = `max_new_tokens`, `stop_sequences` and
the system prompt (the request's own, else the backend's `system`). `prices` turns token usage into
`cost_usd`.

Two ways to send requests:

* **Messages** (the default): concurrent calls on the async client (`max_concurrency`), each reply
  stored as it arrives, transient failures retried with backoff (`max_retries`; see `api.py`).
* **Message Batches** in the stages listed in `batch_stages`: see `lmgcot.llm.anthropic_batches`.

**Prompt caching**: when the requests sent together share a prefix (the instructions and few-shot
exemplars a template puts before the example) of about `prompt_cache_min_tokens` or more, the user
message is sent as two text blocks with a `cache_control` breakpoint after the shared one. Prompt-cache
reads and writes are counted in `results.json` (`llm.cache_read_tokens`, `llm.cache_write_tokens`) and
priced (`cache_read`, `cache_write` in `prices`). A prefix under the model's minimum is simply not
cached by the API.

Sampling settings are NOT sent: the installed SDK (2.x) speaks API version 2026-10-21, whose
`messages.create` has no `temperature` / `top_p` / `top_k` and which answers 400 when a body carries
them. Claude samples with its own defaults, so `temperature: 0` is not greedy here, while n samples
of a prompt are still n separate calls (and cache entries) that come back different.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anthropic

from lmgcot.errors import BackendError, ConfigError
from lmgcot.llm.anthropic_batches import MessageBatchesMixin, message_completion
from lmgcot.llm.api import ApiLargeLM

# The approximation is enough to decide whether a shared prefix is worth a cache breakpoint (the
# API itself decides whether it qualifies).
from lmgcot.llm.base import CHARS_PER_TOKEN, Completion, Request

API_KEY_ENV = "ANTHROPIC_API_KEY"
# The API's limit on requests per batch.
MAX_BATCH_REQUESTS = 100_000
BATCH_DIR = "anthropic_batches"

log = logging.getLogger(__name__)


class AnthropicLargeLM(MessageBatchesMixin, ApiLargeLM):
    """Claude via the official `anthropic` SDK's async client."""

    backend = "anthropic"
    api_key_env = API_KEY_ENV
    _api_errors = (anthropic.APIError,)

    def __init__(
        self,
        model: str = "claude-sonnet-4-6",
        prompt_caching: bool = True,
        prompt_cache_min_tokens: int = 1024,
        batch_stages: Sequence[str] = (),
        batch_poll_s: float = 30.0,
        batch_max_requests: int = 10_000,
        batch_retries: int = 2,
        batch_discount: float = 0.5,
        **kwargs: Any,
    ):
        """Settings as in `ApiLargeLM`, plus prompt caching and Message Batches (module docstring);
        the key comes from ANTHROPIC_API_KEY only."""
        super().__init__(model, **kwargs)
        if not 1 <= int(batch_max_requests) <= MAX_BATCH_REQUESTS:
            raise ConfigError(
                f"large_lm.batch_max_requests={batch_max_requests}: expected 1..{MAX_BATCH_REQUESTS}"
            )
        if float(batch_poll_s) <= 0:
            raise ConfigError(f"large_lm.batch_poll_s={batch_poll_s}: expected > 0")
        if int(batch_retries) < 0:
            raise ConfigError(f"large_lm.batch_retries={batch_retries}: expected >= 0")
        if not 0 <= float(batch_discount) <= 1:
            raise ConfigError(f"large_lm.batch_discount={batch_discount}: expected within [0, 1]")
        if int(prompt_cache_min_tokens) < 0:
            raise ConfigError(
                f"large_lm.prompt_cache_min_tokens={prompt_cache_min_tokens}: expected >= 0"
            )
        self.batch_stages = tuple(str(s) for s in batch_stages or ())
        if "refine" in self.batch_stages:
            raise ConfigError(
                "large_lm.batch_stages: refine cannot use Message Batches (every rollout waits "
                "for its rewards, and a batch can take hours); use it for teacher and evaluate"
            )
        self.prompt_caching = bool(prompt_caching)
        self.prompt_cache_min_tokens = int(prompt_cache_min_tokens)
        self.batch_poll_s = float(batch_poll_s)
        self.batch_max_requests = int(batch_max_requests)
        self.batch_retries = int(batch_retries)
        self.batch_discount = float(batch_discount)
        key = os.environ.get(API_KEY_ENV, "").strip()
        if not key:
            raise BackendError(
                f"anthropic large LM: set {API_KEY_ENV} in the environment "
                "(the key is never read from a config file)"
            )
        self._api_key = key
        self._warned_sampling = False
        self._prefix: str | None = None

    def discount(self) -> float:
        return self.batch_discount if self.batching() else 1.0

    def _make_client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=self._api_key,
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=0,  # retried by lmgcot.llm.retry, with our backoff and count
        )

    # -- one request -----------------------------------------------------------------------

    def shared_prefix(self, prompts: Sequence[str]) -> str | None:
        """The prefix (cut at a line break) that all prompts share, if long enough to cache."""
        if not self.prompt_caching or len(prompts) < 2:
            return None
        prefix = os.path.commonprefix(list(prompts))
        prefix = prefix[: prefix.rfind("\n") + 1]
        if not prefix or len(prefix) < self.prompt_cache_min_tokens * CHARS_PER_TOKEN:
            return None
        return prefix

    def message_params(self, request: Request, prefix: str | None = None) -> dict:
        """The body of one Messages request (also a batch request's `params`)."""
        p = request.params
        if not self._warned_sampling and (p.temperature != 1.0 or p.top_p != 1.0):
            # Once per backend: the setting is honoured by the other backends, not by this API.
            self._warned_sampling = True
            log.warning(
                "anthropic large LM: the Messages API takes no temperature/top_p; "
                "Claude samples with its defaults (temperature=%s ignored)",
                p.temperature,
            )
        content: str | list[dict] = request.prompt
        if prefix and request.prompt.startswith(prefix) and len(request.prompt) > len(prefix):
            content = [
                {"type": "text", "text": prefix, "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": request.prompt[len(prefix) :]},
            ]
        kwargs: dict = {
            "model": self.model,
            "max_tokens": p.max_new_tokens,
            "messages": [{"role": "user", "content": content}],
        }
        if p.stop:
            kwargs["stop_sequences"] = list(p.stop)
        system = self.system_for(p)
        if system:
            kwargs["system"] = system
        return kwargs

    def _prepare(self, requests: list[Request]) -> None:
        self._prefix = self.shared_prefix([r.prompt for r in requests])

    async def _call(self, client: anthropic.AsyncAnthropic, request: Request) -> Completion:
        message = await client.messages.create(**self.message_params(request, self._prefix))
        return message_completion(message)

    @property
    def batch_dir(self) -> Path | None:
        """Where submitted batches are recorded: beside the call cache (None without a cache)."""
        return self.cache.path.parent / BATCH_DIR if self.cache is not None else None
