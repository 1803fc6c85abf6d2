"""`ApiLargeLM`, the base of the HTTP API backends: bounded concurrent calls, price accounting,
one-line errors.

`ApiLargeLM` runs each batch of cache misses as concurrent requests on an SDK's async client, at most
`max_concurrency` in flight. Retries are the SDK's own (`max_retries`, honouring `retry-after`); an
error that is left after them, or that retrying cannot fix (a bad key, a bad request, no credit),
stops the run with a `BackendError` carrying the API's message on one line. Completions of a batch
that fails are lost (not cached); `batch_size` bounds that loss.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from lmgcot.errors import BackendError, ConfigError
from lmgcot.llm.base import Completion, GenerationParams, LargeLM, Request
from lmgcot.llm.cache import CallCache
from lmgcot.llm.concurrency import run_bounded

# Words in a 400/403 message that mean an account problem rather than a bad request.
_BILLING_WORDS = ("credit", "spend", "billing")


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
        max_retries: int = 2,
        base_url: str | None = None,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        api_key: Any = None,
    ):
        if api_key is not None:
            raise ConfigError(
                f"large_lm.api_key: keys are read from the environment ({self.api_key_env}) "
                "only; remove it from the config"
            )
        super().__init__(model, cache=cache, batch_size=int(batch_size))
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
        self.max_retries = int(max_retries)
        self.base_url = base_url or None
        self.prices = _read_prices(prices)
        self._price: dict[str, float] | None = self.prices.get(model)
        # Zero rather than None for a priced model: a fully cached run really cost nothing.
        self.usage.cost_usd = 0.0 if self._price else None

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
        try:
            completions = run_bounded(self._make_client, self._call, requests, self.max_concurrency)
        except self._api_errors as err:
            raise api_error(self.backend, self.model, err, self.max_retries) from None
        self._account_cost(completions)
        return completions

    def _account_cost(self, completions: Sequence[Completion], discount: float = 1.0) -> None:
        """Add the price of fresh completions (times `discount`, e.g. a batch API's) to cost_usd."""
        if self._price is None:
            return
        p = self._price
        cost = (
            discount
            * sum(
                c.input_tokens * p["input"]
                + c.output_tokens * p["output"]
                + c.cache_read_tokens * p["cache_read"]
                + c.cache_write_tokens * p["cache_write"]
                for c in completions
            )
            / 1e6
        )
        self.usage.cost_usd = (self.usage.cost_usd or 0.0) + cost
        stage = self.usage.stage(self._stage)
        stage["cost_usd"] = stage.get("cost_usd", 0.0) + cost

    @abstractmethod
    def _make_client(self) -> Any:
        """A new async SDK client (made per batch: an async client belongs to one event loop)."""

    @abstractmethod
    async def _call(self, client: Any, request: Request) -> Completion:
        """Send one request and read text and token usage from the response."""


def api_error(backend: str, model: str, err: BaseException, max_retries: int) -> BackendError:
    """A one-line `BackendError` with the API's own message (never request headers or the key)."""
    status = getattr(err, "status_code", None)
    message = _one_line(_api_message(err))
    where = f"{backend} large LM {model!r}"
    if status in (400, 403) and any(w in message.lower() for w in _BILLING_WORDS):
        return BackendError(f"{where}: billing problem (HTTP {status}): {message}")
    if status == 401:
        return BackendError(
            f"{where}: authentication failed (HTTP 401), check the API key: {message}"
        )
    if status is not None and (status in (408, 409, 429) or status >= 500):
        return BackendError(f"{where}: HTTP {status} after {max_retries} retries: {message}")
    if status is not None:
        return BackendError(f"{where}: HTTP {status}: {message}")
    # No status: connection refused, timeout; the SDK retried these too.
    kind = type(err).__name__
    return BackendError(f"{where}: {kind} after {max_retries} retries: {message}")


def _api_message(err: BaseException) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str) and inner:
            return inner
    return str(getattr(err, "message", None) or err) or type(err).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


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
