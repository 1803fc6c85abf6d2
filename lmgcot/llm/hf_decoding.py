"""Decoding pieces of the `hf` backend (`lmgcot.llm.hf`): per-request seeded Gumbel sampling, stop
strings, padding, and counting generated tokens. The behaviour they give is documented there."""

from __future__ import annotations

import hashlib
import json

import torch
from transformers import LogitsProcessor, StoppingCriteria

from lmgcot.llm.base import Request


def truncate_at_stop(text: str, stops: tuple[str, ...] | list[str]) -> str:
    """Cut `text` before the stop string whose first occurrence ends earliest (ties: starts
    earliest), which is where streaming generation would have halted."""
    best: tuple[int, int] | None = None
    for stop in stops:
        if not stop:
            continue
        at = text.find(stop)
        if at >= 0 and (best is None or (at + len(stop), at) < best):
            best = (at + len(stop), at)
    return text if best is None else text[: best[1]]


class GumbelSampler(LogitsProcessor):
    """Adds per-row Gumbel noise from per-row seeded generators; greedy argmax then samples."""

    def __init__(self, seeds: list[int]):
        self.seeds = seeds
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.generators is None:
            self.generators = [
                torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds
            ]
        uniform = torch.stack(
            [
                torch.rand(scores.shape[-1], generator=g, device=scores.device)
                for g in self.generators
            ]
        )
        tiny = torch.finfo(uniform.dtype).tiny
        gumbel = -torch.log(-torch.log(uniform.clamp_min(tiny)))
        return scores.float() + gumbel


class StopStrings(StoppingCriteria):
    """Finishes a row once its generated text contains a stop string; remembers at which length."""

    def __init__(self, tokenizer, stops: tuple[str, ...], prefix: int):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prefix = prefix
        self.stopped_at: dict[int, int] = {}

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs
    ) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        length = input_ids.shape[1] - self.prefix
        for row, ids in enumerate(input_ids[:, self.prefix :].tolist()):
            if row in self.stopped_at:
                done[row] = True
                continue
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if any(s in text for s in self.stops):
                self.stopped_at[row] = length
                done[row] = True
        return done


def sample_seed(request: Request) -> int:
    """A stable seed (Python's hash() is salted per process) for one request's sample stream."""
    blob = json.dumps([request.params.system, request.prompt, request.sample_index])
    return (
        int.from_bytes(hashlib.sha256(blob.encode("utf-8")).digest()[:8], "big")
        & 0x7FFF_FFFF_FFFF_FFFF
    )


def pad_batch(
    input_ids: list[list[int]], pad_id: int, left: bool, device: torch.device
) -> dict[str, torch.Tensor]:
    """A padded batch and attention mask, built here so no tokenizer-specific extras creep in."""
    width = max(len(ids) for ids in input_ids)
    ids = torch.full((len(input_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(input_ids), width), dtype=torch.long)
    for row, seq in enumerate(input_ids):
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def generated_length(tokens: list[int], eos_ids: list[int]) -> int:
    """Tokens up to and including the first eos; everything after it is padding."""
    for i, t in enumerate(tokens):
        if t in eos_ids:
            return i + 1
    return len(tokens)


def eos_ids(model, tokenizer) -> list[int]:
    """The model's own end-of-sequence ids (some chat models have several); else the tokenizer's."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    if configured is None:
        configured = tokenizer.eos_token_id
    if configured is None:
        return []
    return [int(configured)] if isinstance(configured, int) else [int(i) for i in configured]
