"""The `anthropic` backend: a Claude model through the Messages API as the frozen large LM.

The API key is read only from the environment variable `ANTHROPIC_API_KEY` (never from a config file,
so it cannot end up in a saved config or a results file); without it construction fails before any
work is done. Each request is one message with `max_tokens` = `max_new_tokens`, `stop_sequences` and
the system prompt (the request's own, else the backend's `system`). `prices` turns token usage into
`cost_usd`.

Two ways to send requests:

* **Messages** (the default): concurrent calls on the async client (`max_concurrency`), the SDK
  retrying transient failures (`max_retries`).
* **Message Batches** in the stages listed in `batch_stages` (bulk work such as `teacher` and
  `evaluate`): up to `batch_max_requests` cache misses go out as one batch at `batch_discount` of the
  price. Every request's `custom_id` is its call-cache key, so results (which come back unordered) are
  matched and stored by it. The batch id and its keys are written to
  `<cache dir>/anthropic_batches/` right after submission, before waiting: a killed run started again
  (or another run wanting some of those calls) polls the recorded batch instead of paying again.
  Requests that errored transiently, expired or were canceled go into a new batch, up to
  `batch_retries` times; an error retrying cannot fix stops the run with the API's message, after the
  batch's successful results have been stored.

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

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anthropic

from lmgcot.errors import BackendError, ConfigError
from lmgcot.llm.api import ApiLargeLM, api_error
from lmgcot.llm.base import Completion, Request, _cache_value
from lmgcot.llm.concurrency import run_async
from lmgcot.utils.io import atomic_write_text

API_KEY_ENV = "ANTHROPIC_API_KEY"
# A rough characters-per-token ratio for English prompts: enough to decide whether a shared prefix
# is worth a cache breakpoint (the API itself decides whether it qualifies).
CHARS_PER_TOKEN = 4
# Batch result errors worth sending again; anything else (invalid request, permission, billing)
# would fail again.
RETRYABLE_BATCH_ERRORS = {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}
# A batch's results stay downloadable for 29 days; a recorded batch older than this is not polled.
BATCH_RETENTION_S = 29 * 24 * 3600
# The API's limit on requests per batch.
MAX_BATCH_REQUESTS = 100_000
BATCH_DIR = "anthropic_batches"

log = logging.getLogger(__name__)


class AnthropicLargeLM(ApiLargeLM):
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

    def _make_client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=self._api_key,
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=self.max_retries,
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

    def _complete(self, requests: list[Request]) -> list[Completion]:
        self._prefix = self.shared_prefix([r.prompt for r in requests])
        return super()._complete(requests)

    async def _call(self, client: anthropic.AsyncAnthropic, request: Request) -> Completion:
        message = await client.messages.create(**self.message_params(request, self._prefix))
        return _completion(message)

    # -- Message Batches -------------------------------------------------------------------

    def batching(self) -> bool:
        """Whether the current stage sends its calls as Message Batches."""
        return self._stage in self.batch_stages

    def _chunk_size(self) -> int:
        return self.batch_max_requests if self.batching() else self.batch_size

    def _complete_and_store(self, requests: list[Request], keys: list[str]) -> list[Completion]:
        if not self.batching():
            return super()._complete_and_store(requests, keys)
        try:
            return run_async(self._run_batches(requests, keys))
        except self._api_errors as err:
            raise api_error(self.backend, self.model, err, self.max_retries) from None

    @property
    def batch_dir(self) -> Path | None:
        """Where submitted batches are recorded: beside the call cache (None without a cache)."""
        return self.cache.path.parent / BATCH_DIR if self.cache is not None else None

    async def _run_batches(self, requests: list[Request], keys: list[str]) -> list[Completion]:
        wanted = {k: i for i, k in enumerate(keys)}
        done: dict[int, Completion] = {}
        errors: dict[int, str] = {}
        async with self._make_client() as client:
            # First whatever an earlier (killed) run already paid for.
            for record in self._recorded_batches(wanted):
                await self._collect(client, record, wanted, done, errors)
            prefix = self.shared_prefix([r.prompt for r in requests])
            for attempt in range(self.batch_retries + 1):
                todo = [i for i in range(len(requests)) if i not in done]
                if not todo:
                    break
                if attempt:
                    log.warning(
                        "anthropic batch: sending %d failed requests again (%d of %d)",
                        len(todo),
                        attempt,
                        self.batch_retries,
                    )
                batch = await client.messages.batches.create(
                    requests=[
                        {"custom_id": keys[i], "params": self.message_params(requests[i], prefix)}
                        for i in todo
                    ]
                )
                record = self._record_batch(batch.id, [keys[i] for i in todo])
                log.info(
                    "anthropic batch %s: %d requests submitted (stage %s)%s",
                    batch.id,
                    len(todo),
                    self._stage,
                    f", recorded in {record['path']}" if record.get("path") else "",
                )
                await self._collect(client, record, wanted, done, errors)
        missing = [i for i in range(len(requests)) if i not in done]
        if missing:
            raise BackendError(
                f"anthropic large LM {self.model!r}: {len(missing)} of {len(requests)} batch "
                f"requests failed after {self.batch_retries} retries; first: "
                f"{errors.get(missing[0], 'no result returned')}"
            )
        return [done[i] for i in range(len(requests))]

    async def _collect(
        self,
        client: anthropic.AsyncAnthropic,
        record: dict,
        wanted: dict[str, int],
        done: dict[int, Completion],
        errors: dict[int, str],
    ) -> None:
        """Wait for a recorded batch, store its results, forget the record."""
        batch_id = record["batch_id"]
        try:
            await self._wait(client, batch_id, len(record["keys"]))
            results = await client.messages.batches.results(batch_id)
        except anthropic.NotFoundError:
            log.warning(
                "anthropic batch %s: no longer on the server; its calls are resent", batch_id
            )
            _forget(record)
            return
        fresh: dict[str, Completion] = {}
        fatal: list[str] = []
        async for entry in results:
            key, result = entry.custom_id, entry.result
            if result.type == "succeeded":
                fresh[key] = _completion(result.message)
                continue
            if result.type == "errored":
                err = result.error.error
                message = f"{err.type}: {' '.join(str(err.message).split())}"
                if err.type not in RETRYABLE_BATCH_ERRORS and key in wanted:
                    fatal.append(message)
            else:
                message = f"request {result.type}"  # expired or canceled: worth sending again
            if key in wanted:
                errors[wanted[key]] = message
        # Store what the batch paid for before anything else can go wrong, then forget it.
        if self.cache is not None and fresh:
            self.cache.put_many([(k, _cache_value(c)) for k, c in fresh.items()])
        self._account_cost(list(fresh.values()), self.batch_discount)
        for key, c in fresh.items():
            if key in wanted:
                done[wanted[key]] = c
        _forget(record)
        if fatal:
            raise BackendError(
                f"anthropic large LM {self.model!r}: batch {batch_id}: {len(fatal)} requests "
                f"cannot succeed: {fatal[0]}"
            )

    async def _wait(self, client: anthropic.AsyncAnthropic, batch_id: str, n: int) -> None:
        t0 = last_log = time.monotonic()
        while True:
            batch = await client.messages.batches.retrieve(batch_id)
            if batch.processing_status == "ended":
                c = batch.request_counts
                log.info(
                    "anthropic batch %s ended after %.0f s: %d succeeded, %d errored, "
                    "%d expired, %d canceled",
                    batch_id,
                    time.monotonic() - t0,
                    c.succeeded,
                    c.errored,
                    c.expired,
                    c.canceled,
                )
                return
            now = time.monotonic()
            if now - last_log >= 60:
                last_log = now
                log.info(
                    "anthropic batch %s: %s, %d requests, waiting %.0f min so far",
                    batch_id,
                    batch.processing_status,
                    n,
                    (now - t0) / 60,
                )
            await asyncio.sleep(self.batch_poll_s)

    def _record_batch(self, batch_id: str, keys: list[str]) -> dict:
        record = {
            "batch_id": batch_id,
            "model": self.model,
            "stage": self._stage,
            "created": time.time(),
            "keys": keys,
        }
        if self.batch_dir is not None:
            name = hashlib.sha256(batch_id.encode()).hexdigest()[:24] + ".json"
            path = self.batch_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(record))
            record["path"] = str(path)
        return record

    def _recorded_batches(self, wanted: dict[str, int]) -> list[dict]:
        """Recorded batches that hold at least one of the wanted calls."""
        if self.batch_dir is None or not self.batch_dir.is_dir():
            return []
        out = []
        for path in sorted(self.batch_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                keys = record["keys"]
                record["batch_id"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # half-written by a process that died, or being removed right now
            record["path"] = str(path)
            if time.time() - float(record.get("created", 0)) > BATCH_RETENTION_S:
                _forget(record)
                continue
            if any(k in wanted for k in keys):
                log.info(
                    "anthropic batch %s: resuming a batch submitted earlier (%d requests)",
                    record["batch_id"],
                    len(keys),
                )
                out.append(record)
        return out


def _completion(message: Any) -> Completion:
    text = "".join(
        block.text for block in message.content if getattr(block, "type", None) == "text"
    )
    usage = message.usage
    return Completion(
        text,
        int(usage.input_tokens or 0),
        int(usage.output_tokens or 0),
        cache_read_tokens=int(getattr(usage, "cache_read_input_tokens", None) or 0),
        cache_write_tokens=int(getattr(usage, "cache_creation_input_tokens", None) or 0),
    )


def _forget(record: dict) -> None:
    if record.get("path"):
        Path(record["path"]).unlink(missing_ok=True)
