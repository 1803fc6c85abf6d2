"""Student models: a tiny T5 built from a config (no files) or a hub checkpoint by name."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    ByT5Tokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

TOKENIZERS = ("byt5", "bpe")


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
    tokenizer: str = "byt5",
    vocab_size: int = 1000,
    corpus: Iterable[str] | None = None,
    seed: int = 0,
) -> Student:
    """`pretrained` names a hub checkpoint or local directory. Without it a fresh T5 is built from
    `architecture` with a tokenizer that needs no files: `byt5` (bytes) or `bpe` (a byte-level BPE
    of `vocab_size` trained on `corpus`, about 3x shorter sequences, so faster training on CPU)."""
    if pretrained:
        tok = AutoTokenizer.from_pretrained(pretrained)
        model = AutoModelForSeq2SeqLM.from_pretrained(pretrained)
    else:
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"student.tokenizer={tokenizer!r}: allowed values are {TOKENIZERS}")
        if tokenizer == "bpe":
            if corpus is None:
                raise ValueError("student.tokenizer=bpe needs a training corpus")
            tok = train_bpe_tokenizer(corpus, vocab_size)
        else:
            tok = ByT5Tokenizer()
        model = build_tiny_t5(architecture or {}, tok, seed=seed)
    return Student(model, tok, max_source_length, max_target_length)


def train_bpe_tokenizer(corpus: Iterable[str], vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """A byte-level BPE (no unknown characters) with T5's special-token layout: pad=0, eos=1."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def build_tiny_t5(
    architecture: dict, tokenizer: PreTrainedTokenizerBase | None = None, seed: int = 0
) -> T5ForConditionalGeneration:
    """A randomly initialised T5 sized by `architecture` (T5Config keys) for `tokenizer`
    (default: a ByT5 tokenizer)."""
    tokenizer = tokenizer or ByT5Tokenizer()
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
        return T5ForConditionalGeneration(config)
