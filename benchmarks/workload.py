"""The throughput benchmark's fixed workload, shared by our runner and the peer runners: a tiny
byte-level T5 and seeded synthetic (source, target) pairs of ASCII words.

Imports nothing from lmgcot, so a peer's interpreter (transformers + accelerate, no lmgcot) can
load it from this folder.
"""

from __future__ import annotations

import random
import resource

PAIRS = 512
SEED = 0
# Byte lengths: triangular, skewed right like question+context sources and rationale targets.
SOURCE_BYTES = (100, 700, 250)  # low, high, mode
TARGET_BYTES = (30, 200, 70)
VOCABULARY = (
    "river mountain city north south east west old new king queen born died founded built "
    "capital country region league club album film novel author singer painter because therefore "
    "first second third then before after during since year century people team between than "
    "larger smaller older younger which who what where when is was are were has had the a an of "
    "in on at by for with from to and or not so"
).split()


def make_pairs(seed: int = SEED, n: int = PAIRS) -> list[tuple[str, str]]:
    """`n` (source, target) pairs; each text is words drawn from VOCABULARY, cut to a byte length
    drawn from its triangular distribution. Same seed, same pairs, on any interpreter."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        source_bytes = int(rng.triangular(*SOURCE_BYTES[:2], SOURCE_BYTES[2]))
        target_bytes = int(rng.triangular(*TARGET_BYTES[:2], TARGET_BYTES[2]))
        pairs.append((_words(rng, source_bytes), _words(rng, target_bytes)))
    return pairs


def _words(rng: random.Random, size: int) -> str:
    text = ""
    while len(text) < size:
        text += rng.choice(VOCABULARY) + " "
    return text[:size].strip() or VOCABULARY[0]


def tiny_t5(seed: int = SEED):
    """(model, tokenizer): a freshly initialised T5 of about 1.89M parameters over ByT5's bytes."""
    import torch
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

    tokenizer = ByT5Tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=128,
        d_ff=512,
        num_layers=4,
        num_decoder_layers=4,
        num_heads=4,
        d_kv=32,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config), tokenizer


def rate_fields(tally: dict, warmup: int) -> dict:
    """Steps, wall time, tokens/s, padding efficiency and peak RSS of a run whose step ends
    (`tally["ends"]`, perf_counter times) and real / padded token counts after the first `warmup`
    steps were tallied: the fields every runner reports alike."""
    ends = tally["ends"]
    wall = ends[-1] - ends[warmup - 1]
    return {
        "steps": len(ends),
        "measured_steps": len(ends) - warmup,
        "wall_s": round(wall, 3),
        "real_tokens_per_s": round(tally["real"] / wall, 1),
        "padded_tokens_per_s": round(tally["padded"] / wall, 1),
        "padding_efficiency": round(tally["real"] / tally["padded"], 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
