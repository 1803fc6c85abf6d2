"""Student models: a tiny T5 built from a config (no files) or a hub checkpoint by name."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    ByT5Tokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)


@dataclass
class Student:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    max_source_length: int
    max_target_length: int


def build_student(
    name: str,
    pretrained: str | None = None,
    max_source_length: int = 512,
    max_target_length: int = 128,
    architecture: dict | None = None,
    seed: int = 0,
) -> Student:
    """`pretrained` names a hub checkpoint or local directory; None builds a fresh T5 from
    `architecture` with the byte-level ByT5 tokenizer, which needs no files."""
    if pretrained:
        tokenizer = AutoTokenizer.from_pretrained(pretrained)
        model = AutoModelForSeq2SeqLM.from_pretrained(pretrained)
    else:
        tokenizer, model = build_tiny_t5(architecture or {}, seed=seed)
    return Student(model, tokenizer, max_source_length, max_target_length)


def build_tiny_t5(architecture: dict, seed: int = 0):
    """A randomly initialised T5 sized by `architecture` (T5Config keys) and a ByT5 tokenizer."""
    tokenizer = ByT5Tokenizer()
    # len(tokenizer) counts the 125 extra ids; vocab_size (256) does not and would overflow.
    config = T5Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **dict(architecture),
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config)
    return tokenizer, model
