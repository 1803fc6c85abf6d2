"""The one interface every large-LM backend implements: text prompts in, completions out.

Backends implement `_complete` for requests the cache has not seen; `LargeLM.generate` handles
batching, n samples, the persistent call cache and usage accounting for all of them.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from lmgcot.errors import BackendError, ConfigError, LmgcotError
from lmgcot.llm.cache import CallCache, cache_key

# The documented approximation of a prompt's tokens where a backend has no tokenizer at hand:
# about 4 characters a token for English (the rule of thumb Anthropic and OpenAI give). Measured
# with Claude's published (v1) tokenizer it is 3.0-5.1 characters a token depending on the text
# (docs/cost.md); a plan calibrates it on the call cache's own replies where it can.
CHARS_PER_TOKEN = 4
# Tokens per character assumed for the spend cap's worst case before any reply has shown the real
# ratio: twice the approximation, above what real tokenizers give for any text but digits.
WORST_TOKENS_PER_CHAR = 0.5
# Margin over the highest tokens-per-character ratio seen so far, once replies have shown one.
WORST_RATIO_MARGIN = 1.25


@dataclass(frozen=True)
class GenerationParams:
    """Every setting that changes a completion; all of them are part of the cache key."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    system: str | None = None

    def __post_init__(self):
        # Normalise types so that `temperature: 0` from YAML and 0.0 share one cache key.
        object.__setattr__(self, "max_new_tokens", int(self.max_new_tokens))
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))
        object.__setattr__(self, "stop", tuple(self.stop))


@dataclass(frozen=True)
class Request:
    prompt: str
    params: GenerationParams
    sample_index: int = 0


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int = 0  # uncached input; prompt-cache reads and writes are counted apart
    output_tokens: int = 0
    cached: bool = False  # served from the call cache (no call made)
    cache_read_tokens: int = 0  # input read from the API's prompt cache
    cache_write_tokens: int = 0  # input written to the API's prompt cache


class SpendCapReached(LmgcotError):
    """`large_lm.max_cost_usd` would be passed by the next requests: stopped before sending them
    (every reply received is in the call cache, so a rerun pays only for the rest)."""


class RequestsFailed(Exception):
    """Some requests of a chunk failed for good while the others were answered (and stored):
    `done` maps positions in the chunk to completions, `errors` positions to one-line reasons."""

    def __init__(self, done: dict[int, Completion], errors: dict[int, str]):
        super().__init__(f"{len(errors)} requests failed")
        self.done, self.errors = done, errors


@dataclass
class Usage:
    """What the large LM cost this process: fresh calls, cache hits, tokens (fresh calls only)."""

    calls: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    seconds: float = 0.0
    by_stage: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def stage(self, name: str) -> dict:
        """The counters of one stage (created empty on first use)."""
        return self.by_stage.setdefault(name, {k: 0 for k in STAGE_COUNTERS} | {"seconds": 0.0})

    def add(self, stage: str, **counts: float) -> None:
        """Add to the totals and to one stage's counters."""
        entry = self.stage(stage)
        for k, v in counts.items():
            setattr(self, k, getattr(self, k) + v)
            entry[k] = entry.get(k, 0) + v


STAGE_COUNTERS = (
    "calls",
    "cache_hits",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
)


def stage_summary(stage: str, counts: dict) -> str:
    """One line for the log: what a stage's large-LM calls took."""
    parts = [
        f"{counts.get('calls', 0)} calls",
        f"{counts.get('cache_hits', 0)} cache hits",
        f"{counts.get('input_tokens', 0)} in / {counts.get('output_tokens', 0)} out tokens",
    ]
    if counts.get("cache_read_tokens") or counts.get("cache_write_tokens"):
        parts.append(
            f"prompt cache {counts.get('cache_read_tokens', 0)} read / "
            f"{counts.get('cache_write_tokens', 0)} written"
        )
    parts.append(f"{counts.get('seconds', 0.0):.1f} s")
    if counts.get("cost_usd") is not None:
        parts.append(f"${counts['cost_usd']:.4f}")
    return f"large LM [{stage}]: " + ", ".join(parts)


class LargeLM(ABC):
    """A frozen large LM. Subclasses set `backend` and implement `_complete`."""

    backend: str = "base"

    # Whether `count_tokens` is the backend's own count (else the documented approximation).
    exact_token_counts: bool = False

    def __init__(
        self,
        model: str,
        cache: CallCache | None = None,
        batch_size: int = 16,
        max_cost_usd: float | None = None,
    ):
        self.model = model
        self.cache = cache
        self.batch_size = batch_size
        self.usage = Usage()
        self._stage = "default"
        if max_cost_usd is not None and float(max_cost_usd) < 0:
            raise ConfigError(f"large_lm.max_cost_usd={max_cost_usd}: must be >= 0, or null")
        self.max_cost_usd = None if max_cost_usd is None else float(max_cost_usd)
        # The highest input tokens per prompt character seen in replies (the spend cap's bound).
        self._tokens_per_char = 0.0

    # -- what a request costs (the plan and the spend cap) ---------------------------------------

    def count_tokens(self, request: Request) -> int:
        """The input tokens of a request: the documented approximation (CHARS_PER_TOKEN) unless a
        backend counts them itself (`exact_token_counts`)."""
        return -(-prompt_chars(request) // CHARS_PER_TOKEN)

    def price(self) -> dict[str, float] | None:
        """USD per million tokens {input, output, cache_read, cache_write}; None: free or unknown."""
        return None

    def discount(self) -> float:
        """The price factor of the current stage's calls (a batch API's discount)."""
        return 1.0

    def batching(self) -> bool:
        """Whether the current stage's calls go out as a batch API's batches."""
        return False

    def worst_cost(self, request: Request) -> float:
        """The most a request can cost (USD): its prompt at the highest tokens-per-character ratio
        seen (WORST_TOKENS_PER_CHAR before any reply) and the dearest input price, plus
        `max_new_tokens` of output; 0 without prices."""
        p = self.price()
        if p is None:
            return 0.0
        ratio = self._tokens_per_char * WORST_RATIO_MARGIN or WORST_TOKENS_PER_CHAR
        n_in = -(-prompt_chars(request) * ratio // 1)
        dearest = max(p["input"], p["cache_read"], p["cache_write"])
        out = request.params.max_new_tokens * p["output"]
        return self.discount() * (n_in * dearest + out) / 1e6

    def _observe(self, request: Request, c: Completion) -> None:
        billed = c.input_tokens + c.cache_read_tokens + c.cache_write_tokens
        if billed:
            self._tokens_per_char = max(
                self._tokens_per_char, billed / max(1, prompt_chars(request))
            )

    def _affordable(self, requests: Sequence[Request]) -> int:
        """How many of `requests`, in order, fit under `max_cost_usd` at their worst cost."""
        if self.max_cost_usd is None or self.price() is None:
            return len(requests)
        left = self.max_cost_usd - (self.usage.cost_usd or 0.0)
        for n, r in enumerate(requests):
            left -= self.worst_cost(r)
            if left < 0:
                return n
        return len(requests)

    def _cap_line(self, unsent: Sequence[Request]) -> str:
        """The one line a run stops with at the spend cap."""
        rest = sum(self.worst_cost(r) for r in unsent)
        spent = self.usage.cost_usd or 0.0
        # Rounded up to the cent: a suggestion that is itself enough for this step's rest.
        more = max(0.01, -(-rest * 100 // 1) / 100)
        return (
            f"large_lm.max_cost_usd={self.max_cost_usd:g}: stopped before passing it, ${spent:.4f} "
            f"spent by this run (every reply is in the call cache); left: {len(unsent)} requests "
            f"of stage {self._stage} (up to ${rest:.4f}) and the stages after it; a rerun pays "
            f"only for the rest: add large_lm.max_cost_usd={more:.2f} to finish this step, or "
            "plan=true to see the whole remaining cost"
        )

    def set_stage(self, stage: str) -> None:
        """Name the pipeline stage that subsequent calls are accounted to."""
        self._stage = stage

    def generate(
        self, prompts: Sequence[str], params: GenerationParams, n: int = 1
    ) -> list[list[Completion]]:
        """n completions per prompt. Sample i of a prompt is its own cached call, so samples at
        temperature > 0 never collapse into one cached answer."""
        requests = [Request(p, params, i) for p in prompts for i in range(n)]
        flat = self.complete(requests)
        return [flat[j * n : (j + 1) * n] for j in range(len(prompts))]

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        """Answer each request from the cache when possible, else from the backend in batches."""
        keys = [self._key(r) for r in requests]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        results: list[Completion | None] = [None] * len(requests)
        # Identical requests in one call are served once; the repeats count as cache hits.
        waiting: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            hit = found.get(key)
            if hit is not None:
                results[i] = _cached_completion(hit)
                self._observe(requests[i], results[i])
            else:
                waiting.setdefault(key, []).append(i)
        missing = [idxs[0] for idxs in waiting.values()]
        stage = self._stage
        self.usage.add(stage, cache_hits=len(requests) - len(missing))
        bar = tqdm(
            total=len(missing),
            desc=f"large LM {stage}",
            unit="call",
            disable=len(missing) <= self.batch_size,
            mininterval=2.0,
        )
        step = self._chunk_size()
        todo = list(missing)
        # Calls another process (a parallel job on the same cache) is making: waited for, not paid.
        elsewhere: list[int] = []
        failed: dict[int, str] = {}  # request index -> why it failed for good
        answered = 0
        while todo or elsewhere:
            if not todo:
                found = self._await_others([keys[i] for i in elsewhere])
                for i in elsewhere:
                    hit = found.get(keys[i])
                    if hit is not None:
                        for j in waiting[keys[i]]:
                            results[j] = _cached_completion(hit)
                self.usage.add(stage, cache_hits=sum(keys[i] in found for i in elsewhere))
                bar.update(sum(keys[i] in found for i in elsewhere))
                # What no one holds any more (its process died or gave up) is ours to make.
                todo = [i for i in elsewhere if keys[i] not in found]
                elsewhere = []
                continue
            chunk, todo = todo[:step], todo[step:]
            if self.cache is not None:
                mine, _ = self.cache.claim([keys[i] for i in chunk])
                owned = set(mine)
                # Claimed by another process, or stored by one since the lookup above.
                elsewhere += [i for i in chunk if keys[i] not in owned]
                chunk = [i for i in chunk if keys[i] in owned]
                if not chunk:
                    continue
            # The spend cap, checked before anything is sent (a whole batch, for batch APIs).
            fit = self._affordable([requests[i] for i in chunk])
            if fit < len(chunk):
                if self.cache is not None:
                    self.cache.release([keys[i] for i in chunk[fit:]])
                if fit:
                    self._run_chunk(chunk[:fit], requests, keys, waiting, results, failed)
                bar.close()
                unsent = [requests[i] for i in [*chunk[fit:], *todo, *elsewhere] if i not in failed]
                raise SpendCapReached(self._cap_line(unsent))
            answered += self._run_chunk(chunk, requests, keys, waiting, results, failed)
            if failed and not answered:
                break  # nothing has worked yet: sending the rest would only repeat the failure
            bar.update(len(chunk))
        bar.close()
        if failed:
            raise BackendError(self._failure_line(failed, len(missing), len(todo) + len(elsewhere)))
        return results  # type: ignore[return-value]

    def _run_chunk(
        self,
        chunk: list[int],
        requests: Sequence[Request],
        keys: list[str],
        waiting: dict[str, list[int]],
        results: list[Completion | None],
        failed: dict[int, str],
    ) -> int:
        """Send one chunk of claimed cache misses; fill `results` (and the repeats of each request)
        and `failed`; the number answered."""
        stage = self._stage
        t0 = time.perf_counter()
        try:
            fresh = self._complete_and_store([requests[i] for i in chunk], [keys[i] for i in chunk])
            done, errors = dict(enumerate(fresh)), {}
        except RequestsFailed as err:
            done, errors = err.done, err.errors
        finally:
            if self.cache is not None:
                self.cache.release([keys[i] for i in chunk])
        for pos, reason in errors.items():
            failed.setdefault(chunk[pos], reason)
        for pos, c in done.items():
            i = chunk[pos]
            results[i] = c
            self._observe(requests[i], c)
            for j in waiting[keys[i]][1:]:
                results[j] = Completion(c.text, c.input_tokens, c.output_tokens, True)
        got = list(done.values())
        self.usage.add(
            stage,
            calls=len(got),
            seconds=time.perf_counter() - t0,
            input_tokens=sum(c.input_tokens for c in got),
            output_tokens=sum(c.output_tokens for c in got),
            cache_read_tokens=sum(c.cache_read_tokens for c in got),
            cache_write_tokens=sum(c.cache_write_tokens for c in got),
        )
        return len(got)

    def _failure_line(self, failed: dict[int, str], n_missing: int, n_unsent: int) -> str:
        """One line for the end of a stage some of whose requests failed for good."""
        stopped = f", {n_unsent} not sent after the first ones all failed" if n_unsent else ""
        return (
            f"{self.backend} large LM {self.model!r}: {len(failed)} of {n_missing} requests "
            f"failed{stopped} (every answer received is cached; a rerun sends only the rest); "
            f"first: {next(iter(failed.values()))}"
        )

    def _await_others(self, keys: list[str], poll_s: float = 0.2) -> dict[str, dict]:
        """Wait until every key is stored or no longer claimed by another process; the stored ones."""
        assert self.cache is not None
        while True:
            found = self.cache.get_many(keys)
            left = [k for k in keys if k not in found]
            if not left:
                return found
            if not self.cache.held_elsewhere(left):
                found.update(self.cache.get_many(left))
                return found
            time.sleep(poll_s)

    def _chunk_size(self) -> int:
        """Cache misses sent to `_complete_and_store` at once."""
        return self.batch_size

    def _complete_and_store(self, requests: list[Request], keys: list[str]) -> list[Completion]:
        """Complete requests that missed the cache and store them under `keys`, in one commit."""
        fresh = self._complete(requests)
        if len(fresh) != len(requests):
            raise RuntimeError(
                f"{type(self).__name__} returned {len(fresh)} completions for {len(requests)}"
            )
        if self.cache is not None:
            self.cache.put_many([(k, _cache_value(c)) for k, c in zip(keys, fresh)])
        return fresh

    def _key(self, request: Request) -> str:
        return cache_key(
            backend=self.backend,
            model=self.model,
            prompt=request.prompt,
            params=asdict(request.params),
            sample_index=request.sample_index,
            extra=self.cache_identity(),
        )

    def check_prompt(self, prompt: str) -> None:
        """Raise `BackendError` if this backend cannot serve such prompts (checked before any work)."""

    def cache_identity(self) -> dict:
        """Backend settings beyond the model name that change completions (part of the cache key)."""
        return {}

    @abstractmethod
    def _complete(self, requests: list[Request]) -> list[Completion]:
        """Run requests that missed the cache; one completion per request, in order."""

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def no_price_for_cap(backend: str, model: str, cap: float) -> str:
    """The one line refusing a spend cap that no price can be checked against."""
    return (
        f"large_lm.max_cost_usd={cap:g}: the {backend} backend has no price for model {model!r} "
        f"(large_lm.prices.{model}: {{input: USD per MTok, output: USD per MTok}}), so a cap "
        "cannot be checked; add its prices or set large_lm.max_cost_usd=null"
    )


def prompt_chars(request: Request) -> int:
    """Characters a request sends: its prompt and its system prompt."""
    return len(request.prompt) + len(request.params.system or "")


def _cached_completion(hit: dict) -> Completion:
    return Completion(
        hit["text"],
        hit["input_tokens"],
        hit["output_tokens"],
        True,
        cache_read_tokens=hit.get("cache_read_tokens", 0),
        cache_write_tokens=hit.get("cache_write_tokens", 0),
    )


def _cache_value(c: Completion) -> dict:
    value = {"text": c.text, "input_tokens": c.input_tokens, "output_tokens": c.output_tokens}
    # The prompt-cache part of the input too (where there was one): a plan reads the whole
    # input of a cached call to calibrate its token estimates.
    if c.cache_read_tokens or c.cache_write_tokens:
        value["cache_read_tokens"] = c.cache_read_tokens
        value["cache_write_tokens"] = c.cache_write_tokens
    return value
