"""Tiny randomly initialised local models for the `hf` backend, so it runs with no network.

    python -m lmgcot.llm.tiny_models seq2seq|causal DIR   # then large_lm.model=DIR

Both use the byte-level ByT5 tokenizer (built in code, no files). Its tokenizer appends `</s>` to
every text, also for the causal model; that is harmless for a random model and keeps the two
tokenizers identical. Their output heads only score printable ASCII and newline, so they write
visible (if meaningless) text, which stop strings can match, and rarely end before the token limit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import ByT5Tokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from lmgcot.student.models import build_tiny_t5

# About 0.2M parameters: big enough to exercise batching, small enough to load in milliseconds.
TINY_T5 = {
    "d_model": 64,
    "d_ff": 128,
    "d_kv": 16,
    "num_heads": 4,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "tie_word_embeddings": False,
}
# ByT5 maps byte b to id b + 3 (ids 0-2 are pad, eos, unk).
_VISIBLE_IDS = [ord("\n") + 3, *range(32 + 3, 127 + 3)]


def save_tiny_seq2seq(path: str | Path, seed: int = 0) -> str:
    """Write a tiny T5 + ByT5 tokenizer to `path`; the same seed writes the same weights."""
    tokenizer = ByT5Tokenizer()
    model = build_tiny_t5(TINY_T5, tokenizer, seed=seed)
    _visible_text_head(model, seed)
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return _save(path, model, tokenizer)


def save_tiny_causal(path: str | Path, seed: int = 0) -> str:
    """Write a tiny Llama (~0.1M parameters) + ByT5 tokenizer to `path`; seeded like the above."""
    tokenizer = ByT5Tokenizer()
    # ByT5 has no BOS; pad (0) differs from eos (1), so left-padded batches stay unambiguous.
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    _visible_text_head(model, seed)
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )
    return _save(path, model, tokenizer)


def _visible_text_head(model, seed: int) -> None:
    """Re-draw the output head so only printable bytes get non-zero logits (std about 3).

    A randomly initialised tied head mostly echoes the last input token, i.e. eos or pad forever,
    which decodes to empty text; an untied head over visible bytes gives text a test can look at.
    """
    head = model.get_output_embeddings().weight
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(len(_VISIBLE_IDS), head.shape[1], generator=generator)
    with torch.no_grad():
        head.zero_()
        # Final hidden states are RMS-normalised (norm ~ sqrt(d)), so this gives logit std ~3.
        head[_VISIBLE_IDS] = rows * (3.0 / head.shape[1] ** 0.5)


def _save(path: str | Path, model, tokenizer) -> str:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["seq2seq", "causal"])
    parser.add_argument("dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    save = save_tiny_seq2seq if args.kind == "seq2seq" else save_tiny_causal
    print(save(args.dir, seed=args.seed))


if __name__ == "__main__":
    main()
