"""`ApiLargeLM`, the base of the HTTP API backends: bounded concurrent calls, price accounting,
one-line errors.

`ApiLargeLM` runs each batch of cache misses as concurrent requests on an SDK's async client, at most
`max_concurrency` in flight, and commits each reply to the call cache the moment it arrives: a
crash, kill or error loses at most the replies that had not arrived. Transient failures are retried
by `lmgcot.llm.retry` (`max_retries`, exponential backoff with jitter, `retry-after` honoured). A
request still failing after its retries, or failing in a way retrying cannot fix (a bad request),
does not stop the others: the stage finishes and stores them, then raises one `BackendError` line
with the count and the first reason. An error every request would hit (a bad key, no permission,
no credit, no such model) stops all of them at once.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from lmgcot.errors import BackendError, ConfigError
from lmgcot.llm.base import (
    Completion,
    GenerationParams,
    LargeLM,
    Request,
    RequestsFailed,
    _cache_value,
    no_price_for_cap,
)
from lmgcot.llm.cache import CallCache
from lmgcot.llm.concurrency import run_settled
from lmgcot.llm.retry import (
    BILLING_WORDS,
    RetryPolicy,
    is_fatal,
    is_retryable,
    message_of,
    status_of,
    with_retries,
)
from lmgcot.utils.http_logs import quiet_http_logs


class ApiLargeLM(LargeLM):
    """Base of the HTTP API backends. Subclasses set `backend` and `_api_errors` and implement
    `_make_client` (a fresh async SDK client) and `_call` (one request -> one `Completion`)."""

    # The SDK's base exception class(es); anything else is a bug and propagates unchanged.
    _api_errors: tuple[type[BaseException], ...] = ()
    # The environment variable the key is read from (the only place it is read from).
    api_key_env: str = ""

    def __init__(
        self,
        model: str,
        cache: CallCache | None = None,
        batch_size: int = 64,
        max_concurrency: int = 8,
        system: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 12,
        retry_base_s: float = 0.5,
        retry_max_s: float = 60.0,
        base_url: str | None = None,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        api_key: Any = None,
        max_cost_usd: float | None = None,
    ):
        if api_key is not None:
            raise ConfigError(
                f"large_lm.api_key: keys are read from the environment ({self.api_key_env}) "
                "only; remove it from the config"
            )
        super().__init__(model, cache=cache, batch_size=int(batch_size), max_cost_usd=max_cost_usd)
        # The SDK is imported by now: its HTTP library's loggers exist.
        quiet_http_logs()
        if int(batch_size) < 1:
            raise ConfigError(f"large_lm.batch_size={batch_size}: expected >= 1")
        if int(max_concurrency) < 1:
            raise ConfigError(f"large_lm.max_concurrency={max_concurrency}: expected >= 1")
        if float(timeout_s) <= 0:
            raise ConfigError(f"large_lm.timeout_s={timeout_s}: expected > 0")
        if int(max_retries) < 0:
            raise ConfigError(f"large_lm.max_retries={max_retries}: expected >= 0")
        self.max_concurrency = int(max_concurrency)
        self.system = system or None
        self.timeout_s = float(timeout_s)
        if float(retry_base_s) < 0 or float(retry_max_s) < 0:
            raise ConfigError("large_lm.retry_base_s / retry_max_s: expected >= 0")
        self.max_retries = int(max_retries)
        self.retry = RetryPolicy(int(max_retries), float(retry_base_s), float(retry_max_s))
        self.base_url = base_url or None
        self.prices = _read_prices(prices)
        self._price: dict[str, float] | None = self.prices.get(model)
        if self.max_cost_usd is not None and self._price is None:
            raise ConfigError(no_price_for_cap(self.backend, model, self.max_cost_usd))
        # Zero rather than None for a priced model: a fully cached run really cost nothing.
        self.usage.cost_usd = 0.0 if self._price else None

    def price(self) -> dict[str, float] | None:
        return self._price

    @property
    def cost_usd(self) -> float | None:
        """USD spent on fresh calls by this process, from `prices`; None if the model has none."""
        return self.usage.cost_usd

    def cache_identity(self) -> dict:
        # The default system prompt changes completions; absent, keys stay those of other backends.
        return {"system": self.system} if self.system else {}

    def system_for(self, params: GenerationParams) -> str | None:
        """The system prompt of a request: its own, else the backend's default."""
        return params.system or self.system

    def _complete(self, requests: list[Request]) -> list[Completion]:
        return self._complete_and_store(requests, None)

    def _complete_and_store(
        self, requests: list[Request], keys: list[str] | None
    ) -> list[Completion]:
        """Send the requests concurrently; store each reply as it arrives (under `keys`). Raises
        `RequestsFailed` if some failed for good, `BackendError` at once on a fatal error."""
        self._prepare(requests)

        async def one(client: Any, i: int) -> Completion:
            c = await with_retries(
                self.retry, lambda: self._call(client, requests[i]), self._api_errors
            )
            # Committed before anything else can go wrong: this reply is paid for.
            if self.cache is not None and keys is not None:
                self.cache.put_many([(keys[i], _cache_value(c))])
            self._account_cost([c])
            return c

        try:
            outcomes = run_settled(
                self._make_client,
                one,
                range(len(requests)),
                self.max_concurrency,
                fatal=is_fatal,
                catch=self._api_errors,
            )
        except self._api_errors as err:
            raise api_error(self.backend, self.model, err, _retries(err)) from None
        errors = {i: o for i, o in enumerate(outcomes) if isinstance(o, BaseException)}
        if not errors:
            return outcomes  # type: ignore[return-value]
        raise RequestsFailed(
            {i: o for i, o in enumerate(outcomes) if i not in errors},
            {i: error_reason(e, _retries(e)) for i, e in errors.items()},
        )

    def _prepare(self, requests: list[Request]) -> None:
        """Called with the requests about to be sent together (a backend may look at them)."""

    def _account_cost(self, completions: Sequence[Completion], discount: float = 1.0) -> None:
        """Add the price of fresh completions (times `discount`, e.g. a batch API's) to cost_usd,
        and to the stage's cost per kind of token (what an invoice lists), discount included."""
        if self._price is None:
            return
        parts = {
            kind: discount * sum(getattr(c, f"{kind}_tokens") for c in completions) * price / 1e6
            for kind, price in self._price.items()
        }
        cost = sum(parts.values())
        self.usage.cost_usd = (self.usage.cost_usd or 0.0) + cost
        stage = self.usage.stage(self._stage)
        stage["cost_usd"] = stage.get("cost_usd", 0.0) + cost
        by_kind = stage.setdefault("cost_usd_by_kind", dict.fromkeys(parts, 0.0))
        for kind, value in parts.items():
            by_kind[kind] += value
        if discount != 1.0:
            # What the batch discount took off the list price: the invoice shows batch prices.
            stage["batch_discount"] = discount
            stage["batch_calls"] = stage.get("batch_calls", 0) + len(completions)
            stage["batch_saved_usd"] = stage.get("batch_saved_usd", 0.0) + cost * (
                1 / discount - 1 if discount else 0.0
            )

    @abstractmethod
    def _make_client(self) -> Any:
        """A new async SDK client (made per batch: an async client belongs to one event loop)."""

    @abstractmethod
    async def _call(self, client: Any, request: Request) -> Completion:
        """Send one request and read text and token usage from the response."""


def _retries(err: BaseException) -> int:
    return int(getattr(err, "retries", 0))


def api_error(backend: str, model: str, err: BaseException, retries: int) -> BackendError:
    """A one-line `BackendError` with the API's own message (never request headers or the key)."""
    return BackendError(f"{backend} large LM {model!r}: {error_reason(err, retries)}")


def error_reason(err: BaseException, retries: int) -> str:
    """Why a request failed, on one line: the status, the retries made, the API's message."""
    status = status_of(err)
    message = message_of(err)
    if status in (400, 403) and any(w in message.lower() for w in BILLING_WORDS):
        return f"billing problem (HTTP {status}): {message}"
    if status == 401:
        return f"authentication failed (HTTP 401), check the API key: {message}"
    if status is not None and is_retryable(err):
        return f"HTTP {status} after {retries} retries: {message}"
    if status is not None:
        return f"HTTP {status}: {message}"
    # No status: connection refused, timeout; retried too.
    return f"{type(err).__name__} after {retries} retries: {message}"


# Prompt-cache prices relative to the input price when a table gives none (Anthropic's 5-minute
# cache: writes cost 1.25x, reads 0.1x).
CACHE_WRITE_FACTOR = 1.25
CACHE_READ_FACTOR = 0.1


def _read_prices(prices: Mapping | None) -> dict[str, dict[str, float]]:
    """{model: {input, output, cache_read, cache_write}} in USD per million tokens, checked (a
    DictConfig works too); the cache prices default to fixed multiples of the input price."""
    out: dict[str, dict[str, float]] = {}
    for model, entry in (prices or {}).items():
        try:
            price = {"input": float(entry["input"]), "output": float(entry["output"])}
            price["cache_read"] = float(entry.get("cache_read", price["input"] * CACHE_READ_FACTOR))
            price["cache_write"] = float(
                entry.get("cache_write", price["input"] * CACHE_WRITE_FACTOR)
            )
            out[str(model)] = price
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ConfigError(
                f"large_lm.prices.{model}: expected {{input: USD per MTok, output: USD per MTok}}"
                " (cache_read, cache_write optional)"
            ) from None
        if min(out[str(model)].values()) < 0:
            raise ConfigError(f"large_lm.prices.{model}: prices must be >= 0")
    return out
