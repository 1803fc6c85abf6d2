"""`DryRunLM`: a large LM that answers from the call cache and sends nothing, counting what the
real backend would be sent. A plan (`lmgcot.pipeline.plan`) runs the stages' own prompt-building
code through it, so what it counts is what a run sends.

Per stage it counts the requests the cache cannot answer (each distinct request once, as
`LargeLM.complete` sends them), the cache hits, and the requests' tokens:

* input: the backend's own count where it has one (`LargeLM.exact_token_counts`: the simulated
  LM's words, an `hf` model's tokenizer on disk), else characters times a tokens-per-character
  ratio measured on the cached calls the plan found (their prompts are known and their usage was
  stored), else the documented approximation (`CHARS_PER_TOKEN`);
* output: the mean output of cached calls with the same `max_new_tokens`, else `max_new_tokens`
  itself (an upper bound, and marked so);
* prompt cache (the `anthropic` backend): requests sent together that share a long enough prefix
  are split as the backend splits them; the first use of a prefix writes it, the others read it.

A request the cache cannot answer gets a placeholder reply of the expected output length, unique
per request, so a second step built from it (zero-shot-CoT's answer step, `cot`'s guided answer)
counts as the distinct request it will be.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from lmgcot.llm.base import (
    CHARS_PER_TOKEN,
    WORST_RATIO_MARGIN,
    WORST_TOKENS_PER_CHAR,
    Completion,
    GenerationParams,
    LargeLM,
    Request,
    _cached_completion,
    prompt_chars,
)
from lmgcot.llm.cache import CallCache


@dataclass
class StageCount:
    """What one stage would send. Token fields are filled by `DryRunLM.finish`."""

    requests: int = 0
    cache_hits: int = 0
    # Requests counted from settings rather than from their prompts (training-dependent stages).
    estimated_requests: int = 0
    exact_input_tokens: int = 0
    input_chars: int = 0
    cache_read_chars: int = 0
    cache_write_chars: int = 0
    # max_new_tokens -> requests sent with it (their output is estimated per group).
    by_max_tokens: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    worst_input_chars: int = 0
    batches: bool = False
    discount: float = 1.0
    notes: list[str] = field(default_factory=list)
    # Filled by finish():
    input_tokens: int = 0
    output_tokens: int = 0
    output_at_most: bool = False
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    worst_cost_usd: float | None = None


class DryRunLM(LargeLM):
    """Wraps the configured backend: same keys, same chunking and prompt-cache splits, no calls."""

    def __init__(self, real: LargeLM, cache: CallCache | None):
        super().__init__(real.model, cache=None, batch_size=real.batch_size)
        self.backend = real.backend
        self.real = real
        self.reader = cache
        self.stages: dict[str, StageCount] = {}
        self._planned: set[str] = set()  # keys a run would have stored by then
        self._prefixes: set[str] = set()
        # Calibration from cached calls: prompt characters and the input tokens billed for them.
        self._seen_chars = 0
        self._seen_tokens = 0
        self._seen_max_ratio = 0.0
        self._seen_output: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # sum, count

    def set_stage(self, stage: str) -> None:
        super().set_stage(stage)
        self.real.set_stage(stage)
        count = self.count()
        count.batches = self.real.batching()
        count.discount = self.real.discount()

    def count(self) -> StageCount:
        return self.stages.setdefault(self._stage, StageCount())

    def _key(self, request: Request) -> str:
        return self.real._key(request)

    def _complete(self, requests: list[Request]) -> list[Completion]:
        raise AssertionError("a plan sends nothing")  # complete() never gets here

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        count = self.count()
        keys = [self._key(r) for r in requests]
        found = self.reader.get_many(keys) if self.reader is not None else {}
        out: list[Completion | None] = [None] * len(requests)
        missing: list[int] = []
        fresh: set[str] = set()
        for i, (r, key) in enumerate(zip(requests, keys)):
            hit = found.get(key)
            if hit is not None:
                out[i] = _cached_completion(hit)
                self._calibrate(r, out[i])
                count.cache_hits += 1
            elif key in self._planned or key in fresh:
                count.cache_hits += 1  # sent earlier in the run: stored by the time it is asked
            else:
                fresh.add(key)
                missing.append(i)
        for i in range(len(requests)):
            if out[i] is None:
                out[i] = Completion(self._placeholder(keys[i], requests[i]))
        self._planned |= fresh
        self._add(count, [requests[i] for i in missing])
        return out  # type: ignore[return-value]

    def estimate(self, prompts: Sequence[str], n: int, params: GenerationParams) -> None:
        """Count `n` requests like those of `prompts` (a sample, cycled) that depend on training:
        no cache lookup (an upper bound), no prompt-cache split."""
        if n <= 0 or not prompts:
            return
        count = self.count()
        count.estimated_requests += n
        sample = [Request(p, params) for p in prompts]
        mean_chars = sum(prompt_chars(r) for r in sample) / len(sample)
        if self.real.exact_token_counts:
            mean = sum(self.real.count_tokens(r) for r in sample) / len(sample)
            count.exact_input_tokens += round(n * mean)
        else:
            count.input_chars += round(n * mean_chars)
        count.worst_input_chars += round(n * mean_chars)
        count.by_max_tokens[params.max_new_tokens] += n
        count.requests += n

    def placeholder_text(self, max_new_tokens: int) -> str:
        """Text of the length a reply with this `max_new_tokens` is expected to have."""
        n = max(1, round(self._expected_output(max_new_tokens)[0]))
        if self.real.exact_token_counts:
            return " ".join(["word"] * n)
        chars = round(n / self._tokens_per_char_seen())
        return ("word " * (chars // 5 + 1))[:chars]

    # -- counting ------------------------------------------------------------------------------

    def _add(self, count: StageCount, requests: list[Request]) -> None:
        if not requests:
            return
        count.requests += len(requests)
        step = max(1, self.real._chunk_size())
        shared_prefix = getattr(self.real, "shared_prefix", None)
        for start in range(0, len(requests), step):
            chunk = requests[start : start + step]
            # As the backend sends them: a chunk's shared prefix behind a cache breakpoint.
            prefix = shared_prefix([r.prompt for r in chunk]) if shared_prefix else None
            for r in chunk:
                count.by_max_tokens[r.params.max_new_tokens] += 1
                count.worst_input_chars += prompt_chars(r)
                if self.real.exact_token_counts:
                    count.exact_input_tokens += self.real.count_tokens(r)
                    continue
                cut = len(prefix) if prefix and len(r.prompt) > len(prefix) else 0
                if cut and prefix in self._prefixes:
                    count.cache_read_chars += cut
                elif cut:
                    self._prefixes.add(prefix)
                    count.cache_write_chars += cut
                count.input_chars += prompt_chars(r) - cut

    def _calibrate(self, request: Request, c: Completion) -> None:
        billed = c.input_tokens + c.cache_read_tokens + c.cache_write_tokens
        if billed:
            self._seen_chars += prompt_chars(request)
            self._seen_tokens += billed
            self._seen_max_ratio = max(self._seen_max_ratio, billed / max(1, prompt_chars(request)))
        if c.output_tokens:
            seen = self._seen_output[request.params.max_new_tokens]
            seen[0] += c.output_tokens
            seen[1] += 1

    def _tokens_per_char_seen(self) -> float:
        if self._seen_chars:
            return self._seen_tokens / self._seen_chars
        return 1 / CHARS_PER_TOKEN

    def _expected_output(self, max_new_tokens: int) -> tuple[float, bool]:
        """(tokens a reply is expected to have, whether that is the maximum for want of data)."""
        total, n = self._seen_output.get(max_new_tokens, (0, 0))
        if n:
            return min(total / n, max_new_tokens), False
        return float(max_new_tokens), True

    def _placeholder(self, key: str, request: Request) -> str:
        # Unique per request: two placeholders never make one request of a second step.
        return f"[{key[:12]}] " + self.placeholder_text(request.params.max_new_tokens)

    def token_source(self) -> str:
        """How the input tokens were counted, in words for the plan's notes."""
        if self.real.exact_token_counts:
            return f"the {self.backend} backend's own token count"
        if self._seen_chars:
            return (
                f"{1 / self._tokens_per_char_seen():.2f} characters a token, measured on the "
                "cached calls found"
            )
        return f"~{CHARS_PER_TOKEN} characters a token (approximation: no cached call to measure)"

    def finish(self) -> dict[str, StageCount]:
        """Turn characters into tokens and tokens into cost, per stage."""
        ratio = self._tokens_per_char_seen()
        price = self.real.price()
        # The spend cap's bound on a prompt's tokens (`LargeLM.worst_cost`).
        worst_ratio = None
        if not self.real.exact_token_counts:
            worst_ratio = self._seen_max_ratio * WORST_RATIO_MARGIN or WORST_TOKENS_PER_CHAR
        for count in self.stages.values():
            count.input_tokens = count.exact_input_tokens + round(count.input_chars * ratio)
            count.cache_read_tokens = round(count.cache_read_chars * ratio)
            count.cache_write_tokens = round(count.cache_write_chars * ratio)
            out, at_most = 0.0, False
            for max_tokens, n in count.by_max_tokens.items():
                each, unknown = self._expected_output(max_tokens)
                out += n * each
                at_most |= unknown and n > 0
            count.output_tokens = round(out)
            count.output_at_most = at_most
            if price is None:
                continue
            count.cost_usd = (
                count.discount
                * (
                    count.input_tokens * price["input"]
                    + count.output_tokens * price["output"]
                    + count.cache_read_tokens * price["cache_read"]
                    + count.cache_write_tokens * price["cache_write"]
                )
                / 1e6
            )
            # What the spend cap reckons with: every prompt at its worst, every reply at its max.
            worst_in = (
                count.exact_input_tokens
                if worst_ratio is None
                else count.worst_input_chars * worst_ratio
            )
            dearest = max(price["input"], price["cache_read"], price["cache_write"])
            max_out = sum(m * n for m, n in count.by_max_tokens.items())
            count.worst_cost_usd = (
                count.discount * (worst_in * dearest + max_out * price["output"]) / 1e6
            )
        return self.stages
