"""Rationale generation with the student: greedy or k samples per input, batched by length."""

from __future__ import annotations

import torch

from lmgcot.student import fast_t5_generation
from lmgcot.student.batching import pad_to_multiple
from lmgcot.student.models import Student


@torch.inference_mode()
def generate_rationales(
    student: Student,
    inputs: list[str],
    num_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    progress=None,
    num_beams: int = 1,
    fast: bool = True,
) -> list[list[str]]:
    """`num_samples` rationales per input (greedy when temperature is 0; beam search over
    `num_beams` beams when that is above 1). Inputs are sorted by length so batches carry little
    padding; results come back in input order. Seeded. `fast`: greedy and sampled decoding of a
    T5 student through `fast_t5_generation.generate` (the same tokens greedily, 1.5-2x faster on
    CPU); beam search and other models use the model's own `generate`."""
    model, tok = student.model, student.tokenizer
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded = tok(inputs, truncation=True, max_length=student.max_source_length)["input_ids"]
    order = sorted(range(len(inputs)), key=lambda i: -len(encoded[i]))
    out: list[list[str]] = [[] for _ in inputs]
    sampling = temperature > 0
    gen = torch.Generator().manual_seed(seed)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids = pad_to_multiple([encoded[i] for i in idx], tok.pad_token_id).to(device)
            # One seed per batch drawn from a seeded stream: reproducible whatever ran before.
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            seqs = decode_tokens(
                model,
                ids,
                (ids != tok.pad_token_id).long(),
                student.max_target_length,
                num_samples=num_samples,
                temperature=temperature,
                top_p=top_p,
                num_beams=num_beams,
                fast=fast,
            )
            texts = [t.strip() for t in tok.batch_decode(seqs, skip_special_tokens=True)]
            per = num_samples if sampling else 1
            for j, i in enumerate(idx):
                # Greedy decoding gives one answer; k greedy "samples" are copies of it.
                out[i] = texts[j * per : (j + 1) * per] * (1 if sampling else num_samples)
            if progress is not None:
                progress(len(idx))
    finally:
        model.train(was_training)
    return out


def decode_tokens(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    num_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_beams: int = 1,
    fast: bool = True,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> torch.Tensor:
    """(prompts x num_samples, steps) tokens without the decoder start token, a prompt's samples
    next to each other, pad after a row's EOS: greedy (temperature 0; beam search over
    `num_beams`) or sampled from the untruncated tempered distribution (nucleus-truncated when
    `top_p` < 1). Through `fast_t5_generation.generate` when `fast` and it covers the model (not
    beam search), else the model's own `generate`."""
    if fast and num_beams == 1 and fast_t5_generation.supports_generation(model):
        return fast_t5_generation.generate(
            model,
            input_ids,
            attention_mask,
            max_new_tokens,
            num_samples=num_samples,
            temperature=temperature,
            top_p=top_p,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
        )
    if temperature > 0:
        # No top-k truncation: samples follow the student's full distribution.
        options = dict(
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            num_return_sequences=num_samples,
        )
    else:
        options = dict(do_sample=False, num_beams=num_beams)
    for key, value in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
        if value is not None:
            options[key] = value
    return model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        decoder_start_token_id=model.config.decoder_start_token_id,
        **options,
    )[:, 1:]


@torch.inference_mode()
def score_rationales(
    student: Student, inputs: list[str], rationales: list[str], batch_size: int = 64
) -> list[list[float]]:
    """Per-token log-probabilities of each rationale (its tokens and EOS) given its input, under
    the student, teacher-forced. Used for the fluency aspect."""
    model, tok = student.model, student.tokenizer
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    src = tok(inputs, truncation=True, max_length=student.max_source_length)["input_ids"]
    tgt = tok(rationales, truncation=True, max_length=student.max_target_length)["input_ids"]
    out: list[list[float]] = [[] for _ in inputs]
    order = sorted(range(len(inputs)), key=lambda i: -len(src[i]))
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids = pad_to_multiple([src[i] for i in idx], tok.pad_token_id).to(device)
            labels = pad_to_multiple([tgt[i] for i in idx], -100).to(device)
            logits = model(
                input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), labels=labels
            ).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            picked = logprobs.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
            for row, i in enumerate(idx):
                out[i] = picked[row, : len(tgt[i])].tolist()
    finally:
        model.train(was_training)
    return out
