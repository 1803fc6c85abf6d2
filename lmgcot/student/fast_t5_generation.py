"""Greedy and sampled decoding for Hugging Face's T5 family on `fast_t5`'s pieces (its position
bias, attention weights, feed-forward and dropout): what the model's own `generate` computes, in
a fraction of its time at student sizes. Models or generation configs it does not cover are left
to Hugging Face's `generate`: see `supports_generation`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import T5ForConditionalGeneration

from lmgcot.student.fast_t5 import (
    _feed_forward,
    _norm,
    _p,
    _padding,
    _position_bias,
    _qkv_weight,
    dropout,
    encode,
    lm_logits,
    supports,
)

# Generation settings that would change which token comes next: `generate` applies none of them,
# so a model whose generation config sets one is left to Hugging Face's `generate`.
_PROCESSING = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "min_length": 0,
    "min_new_tokens": None,
    "bad_words_ids": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "forced_decoder_ids": None,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
    "renormalize_logits": False,
    # Sampling truncations a generation config can carry (top_k and top_p the callers set).
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "min_p": None,
    "guidance_scale": None,
    "watermarking_config": None,
}


def supports_generation(model: torch.nn.Module) -> bool:
    """Whether `generate` decodes `model` as its own `generate` would: a T5 `supports` covers
    whose generation config adds no logits processing beyond suppressed tokens (penalties,
    forced tokens, banned sequences)."""
    if not supports(model):
        return False
    config = model.generation_config
    return all(
        getattr(config, key, default) in (default, None) for key, default in _PROCESSING.items()
    )


@torch.no_grad()
def generate(
    model: T5ForConditionalGeneration,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    num_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> torch.Tensor:
    """Greedy decoding (temperature 0) or `num_samples` samples per prompt from the tempered
    distribution, nucleus-truncated when `top_p` < 1: (prompts x num_samples, steps) tokens
    without the decoder start token, a prompt's samples next to each other, the pad token after a
    row's EOS (by default the model's generation config's); stops when every row has ended or
    after `max_new_tokens`.

    What Hugging Face's `generate` computes for this model (greedy tokens are the same), in a
    fraction of its time at student sizes: cross-attention keys and values are computed once and
    shared by a prompt's samples (its samples are the query rows of one attention), the
    self-attention cache is written in place, and a sample is drawn by inverting the cumulative
    distribution with one uniform number per row: `torch.multinomial` draws an exponential
    variate per vocabulary entry, a quarter of a decoding step at a 2,000-token vocabulary."""
    sampling = temperature > 0
    k = num_samples if sampling else 1
    encoded = encode(model, input_ids, attention_mask)
    prompts, source = input_ids.shape
    stack = model.decoder
    first = stack.block[0].layer[0].SelfAttention
    heads, size = first.n_heads, first.key_value_proj_dim
    cross, cache = [], []
    for block in stack.block:
        att = block.layer[1].EncDecAttention
        kv = F.linear(encoded, torch.cat([att.k.weight, att.v.weight]))
        keys, values = kv.view(prompts, source, 2, heads, size).permute(2, 0, 3, 1, 4)
        # Keys stored transposed and both contiguous: a strided operand is copied by every matmul.
        cross.append((keys.transpose(-1, -2).contiguous(), values.contiguous()))
        shape = (prompts * k, heads, max_new_tokens, size)
        cache.append((encoded.new_zeros(shape), encoded.new_zeros(shape)))
    device = input_ids.device
    live = _Live(
        prompts=torch.arange(prompts, device=device),
        cross=cross,
        cross_mask=_padding(attention_mask, encoded.dtype),  # (prompts, 1, 1, S)
        cache=cache,
        token=torch.full((prompts * k,), model.config.decoder_start_token_id, device=device),
        ended=torch.zeros(prompts * k, dtype=torch.bool, device=device),
    )
    weights = [_qkv_weight(block.layer[0].SelfAttention) for block in stack.block]
    bias = _position_bias(first, max_new_tokens, False)[0]  # (heads, T, T): row t for step t
    eos = model.generation_config.eos_token_id if eos_token_id is None else eos_token_id
    eos = torch.tensor(eos if isinstance(eos, list) else [eos], device=device)
    if pad_token_id is None:
        pad_token_id = model.generation_config.pad_token_id
    pad = model.config.pad_token_id if pad_token_id is None else pad_token_id
    # The generation config's suppressed tokens are never picked (as its own `generate` does).
    suppressed = model.generation_config.suppress_tokens
    suppressed = torch.tensor(suppressed or [], dtype=torch.long, device=device)
    out = torch.full((prompts, k, max_new_tokens), pad, device=device)
    steps = max_new_tokens
    for step in range(max_new_tokens):
        logits = _step(model, live, weights, bias, step, k)
        if len(suppressed):
            logits[:, suppressed] = float("-inf")
        token = _sample(logits, temperature, top_p) if sampling else logits.argmax(-1)
        live.token = token.masked_fill(live.ended, pad)
        out[live.prompts, :, step] = live.token.view(-1, k)
        live.ended |= torch.isin(live.token, eos)
        finished = live.ended.view(-1, k).all(1)
        done = int(finished.sum())
        if done == len(finished):
            steps = step + 1
            break
        # Ended prompts leave the batch once a quarter has: the steps after cost less, and the
        # gather of the cache is paid rarely.
        if 4 * done >= len(finished):
            live.keep(~finished, k)
    return out[:, :, :steps].reshape(prompts * k, steps)


@dataclass
class _Live:
    """The prompts still decoding (their indices among the call's), with their cross-attention
    keys and values per layer, padding mask, self-attention cache per layer, last tokens and
    which of their k rows have ended."""

    prompts: torch.Tensor
    cross: list[tuple[torch.Tensor, torch.Tensor]]
    cross_mask: torch.Tensor
    cache: list[tuple[torch.Tensor, torch.Tensor]]
    token: torch.Tensor
    ended: torch.Tensor

    def keep(self, which: torch.Tensor, k: int) -> None:
        rows = which.repeat_interleave(k)
        self.prompts = self.prompts[which]
        self.cross = [(keys[which], values[which]) for keys, values in self.cross]
        self.cross_mask = self.cross_mask[which]
        self.cache = [(past_k[rows], past_v[rows]) for past_k, past_v in self.cache]
        self.token, self.ended = self.token[rows], self.ended[rows]


def _step(model, live: _Live, weights, bias: torch.Tensor, step: int, k: int) -> torch.Tensor:
    """The next-token logits (float32) of every live row, its cache written at `step`."""
    stack = model.decoder
    rows, prompts = len(live.token), len(live.prompts)
    h = dropout(stack.embed_tokens(live.token)[:, None], _p(model), model.training)
    for block, weight, (keys, values), (past_k, past_v) in zip(
        stack.block, weights, live.cross, live.cache
    ):
        layer = block.layer[0]
        heads, size = layer.SelfAttention.n_heads, layer.SelfAttention.key_value_proj_dim
        x = _norm(layer.layer_norm, h)
        q, k_new, v_new = F.linear(x, weight).view(rows, 3, heads, 1, size).unbind(1)
        past_k[:, :, step] = k_new[:, :, 0]
        past_v[:, :, step] = v_new[:, :, 0]
        scores = torch.matmul(q, past_k[:, :, : step + 1].transpose(-1, -2))
        scores += bias[:, step : step + 1, : step + 1]
        mixed = torch.matmul(torch.softmax(scores, dim=-1), past_v[:, :, : step + 1])
        h = h + dropout(
            layer.SelfAttention.o(mixed.view(rows, 1, heads * size)), _p(model), model.training
        )
        layer = block.layer[1]
        x = _norm(layer.layer_norm, h)
        # A prompt's k rows are k queries against its one set of keys: (prompts, heads, k, S).
        q = layer.EncDecAttention.q(x).view(prompts, k, heads, size).transpose(1, 2)
        scores = torch.matmul(q, keys) + live.cross_mask
        mixed = torch.matmul(torch.softmax(scores, dim=-1), values).transpose(1, 2)
        h = h + dropout(
            layer.EncDecAttention.o(mixed.reshape(rows, 1, heads * size)), _p(model), model.training
        )
        h = _feed_forward(model, block.layer[-1], h)
    h = dropout(_norm(stack.final_layer_norm, h), _p(model), model.training)
    return lm_logits(model, h[:, 0]).float()


def _sample(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """One token per row from softmax(logits / temperature), restricted to the smallest set of
    most likely tokens whose probability reaches `top_p` when that is below 1 (Hugging Face's
    `TopPLogitsWarper`: the most likely token always stays)."""
    probs = torch.softmax(logits / temperature if temperature != 1.0 else logits, dim=-1)
    order = None
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        before = probs.cumsum(-1) - probs  # the mass of the more likely tokens
        dropped = before >= top_p
        dropped[:, 0] = False
        probs = probs.masked_fill(dropped, 0.0)
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:]
    u = torch.rand(cdf.shape[0], 1, device=cdf.device, dtype=cdf.dtype) * total
    # Below the total even where the product rounds up to it: the first entry the draw falls
    # short of is then always a token of positive probability, never a suppressed one at the end.
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))
    picked = torch.searchsorted(cdf, u, right=True)
    return picked[:, 0] if order is None else order.gather(-1, picked)[:, 0]
