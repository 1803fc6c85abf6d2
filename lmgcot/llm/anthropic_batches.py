"""Message Batches for the `anthropic` backend, in the stages listed in `batch_stages` (bulk work
such as `teacher` and `evaluate`): up to `batch_max_requests` cache misses go out as one batch at
`batch_discount` of the price.

Every request's `custom_id` is its call-cache key, so results (which come back unordered) are
matched and stored by it. The batch id and its keys are written to `<cache dir>/anthropic_batches/`
right after submission, before waiting: a killed run started again (or another run wanting some of
those calls) polls the recorded batch instead of paying again. Requests that errored transiently,
expired or were canceled go into a new batch, up to `batch_retries` times; an error retrying cannot
fix stops the run with the API's message, after the batch's successful results have been stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import anthropic

from lmgcot.errors import BackendError
from lmgcot.llm.api import api_error
from lmgcot.llm.base import Completion, Request, _cache_value
from lmgcot.llm.concurrency import run_async
from lmgcot.utils.io import atomic_write_text

# Batch result errors worth sending again; anything else (invalid request, permission, billing)
# would fail again.
RETRYABLE_BATCH_ERRORS = {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}
# A batch's results stay downloadable for 29 days; a recorded batch older than this is not polled.
BATCH_RETENTION_S = 29 * 24 * 3600

# The backend's logger: batch progress reads as the anthropic backend's, as before the split.
log = logging.getLogger("lmgcot.llm.anthropic")


class MessageBatchesMixin:
    """The batch path of `AnthropicLargeLM`: the host is an `ApiLargeLM` with the batch settings,
    `batch_dir`, `_make_client`, `shared_prefix` and `message_params`."""

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
                fresh[key] = c = message_completion(result.message)
                # Stored as read: a kill while reading loses nothing (the record also remains).
                if self.cache is not None:
                    self.cache.put_many([(key, _cache_value(c))])
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


def message_completion(message: Any) -> Completion:
    """A Messages API message (one call's, or a batch result's) -> `Completion`."""
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
