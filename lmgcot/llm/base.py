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

from lmgcot.llm.cache import CallCache, cache_key


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
    input_tokens: int = 0
    output_tokens: int = 0
    cached: bool = False


@dataclass
class Usage:
    """What the large LM cost this process: fresh calls, cache hits, tokens (fresh calls only)."""

    calls: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    seconds: float = 0.0
    by_stage: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class LargeLM(ABC):
    """A frozen large LM. Subclasses set `backend` and implement `_complete`."""

    backend: str = "base"

    def __init__(self, model: str, cache: CallCache | None = None, batch_size: int = 16):
        self.model = model
        self.cache = cache
        self.batch_size = batch_size
        self.usage = Usage()
        self._stage = "default"

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
                results[i] = Completion(
                    hit["text"], hit["input_tokens"], hit["output_tokens"], True
                )
            else:
                waiting.setdefault(key, []).append(i)
        missing = [idxs[0] for idxs in waiting.values()]
        stage = self.usage.by_stage.setdefault(
            self._stage,
            {"calls": 0, "cache_hits": 0, "input_tokens": 0, "output_tokens": 0, "seconds": 0.0},
        )
        hits = len(requests) - len(missing)
        self.usage.cache_hits += hits
        stage["cache_hits"] += hits
        bar = tqdm(
            total=len(missing),
            desc=f"large LM {self._stage}",
            unit="call",
            disable=len(missing) <= self.batch_size,
            mininterval=2.0,
        )
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            t0 = time.perf_counter()
            fresh = self._complete([requests[i] for i in chunk])
            elapsed = time.perf_counter() - t0
            if len(fresh) != len(chunk):
                raise RuntimeError(
                    f"{type(self).__name__} returned {len(fresh)} completions for {len(chunk)}"
                )
            if self.cache is not None:
                self.cache.put_many([(keys[i], _cache_value(c)) for i, c in zip(chunk, fresh)])
            for i, c in zip(chunk, fresh):
                repeats = waiting[keys[i]]
                results[i] = c
                for j in repeats[1:]:
                    results[j] = Completion(c.text, c.input_tokens, c.output_tokens, True)
                self.usage.input_tokens += c.input_tokens
                self.usage.output_tokens += c.output_tokens
                stage["input_tokens"] += c.input_tokens
                stage["output_tokens"] += c.output_tokens
            self.usage.calls += len(chunk)
            self.usage.seconds += elapsed
            stage["calls"] += len(chunk)
            stage["seconds"] += elapsed
            bar.update(len(chunk))
        bar.close()
        return results  # type: ignore[return-value]

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


def _cache_value(c: Completion) -> dict:
    return {"text": c.text, "input_tokens": c.input_tokens, "output_tokens": c.output_tokens}
