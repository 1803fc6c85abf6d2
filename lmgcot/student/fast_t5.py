"""A training forward for Hugging Face's T5 family that reads the model's own parameters and runs
the same computation in fewer, cheaper operations: the teacher-forced forward of distillation and
of the RL update. Greedy and sampled generation built on the same pieces is in
`fast_t5_generation`. Saving, loading and beam search stay Hugging Face's.

Where the time goes in Hugging Face's forward on CPU (tiny T5, 2 threads, profiled): dropout's
keep masks drawn by `bernoulli_` (a third of a training step), the relative position bias merged
with the padding mask again in every layer, a NaN-safe softmax that checks every row for all
masked keys, and separate q, k and v projections. Here:

- `dropout` draws 64 random bits per 4 elements and keeps an element when its 16 bits reach a
  threshold: 4-5x cheaper than `bernoulli_` on CPU. The keep probability is the configured one
  rounded to 1/65536 and the scale is its inverse, so the expectation is exact. On other devices
  torch's own fused dropout is used.
- The position bias and the mask are added once per stack (T5 shares them across layers).
- Plain softmax: every row has at least one key it may attend (the causal diagonal, or a
  non-pad source token).
- One matmul for q, k and v (k and v for cross-attention).

Bitwise, results differ from Hugging Face's only in float summation order; `tests/test_fast_t5.py`
checks logits, loss and gradients against it. Models this does not cover (another architecture,
float16, gradient checkpointing) fall back to the model's own forward: see `supports`, and for
generation `fast_t5_generation.supports_generation`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import T5ForConditionalGeneration

_BITS = 65536


def supports(model: torch.nn.Module) -> bool:
    """Whether `model`'s training forward can run here: a T5 encoder-decoder in float32 or
    bfloat16, without gradient checkpointing."""
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:  # the older name
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    return (
        type(model) is T5ForConditionalGeneration
        and model.shared.weight.dtype in (torch.float32, torch.bfloat16)
        and not checkpointing
    )


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    x, scale = _dropped(x, p)
    return x.mul_(scale) if scale != 1.0 else x


def _dropped(x: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """(x with dropped elements zeroed, the scale still to apply). On CPU the scale is left to
    the caller, so attention can apply it to the smaller tensor after the value matmul; elsewhere
    torch's fused dropout scales itself."""
    if x.device.type != "cpu":
        return F.dropout(x, p, True), 1.0
    keep, scale = keep_mask(x.shape, p, x.dtype, x.device)
    return x * keep, scale


def keep_mask(
    shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, float]:
    """(a 0/1 mask of `shape` in `dtype`, 1 / its keep probability). Draws from torch's default
    generator, so `seed_everything` makes it reproducible. The mask is written as floats straight
    from the comparison and applied by multiplication: a bool mask costs a conversion pass when
    multiplied, and `torch.where` is three times slower than a multiplication on CPU."""
    n = shape.numel()
    drop = round(p * _BITS)
    if drop >= _BITS:
        return torch.zeros(shape, dtype=dtype, device=device), 0.0
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), 2**63 - 1)
    bits = words.view(torch.int16)[:n].view(shape)
    keep = torch.empty(shape, dtype=dtype, device=device)
    torch.ge(bits, drop - _BITS // 2, out=keep)
    return keep, _BITS / (_BITS - drop)


def seq2seq_loss(
    model: T5ForConditionalGeneration,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Token-mean cross-entropy of `labels` (-100 ignored), as `model(**batch).loss` computes it."""
    encoded = encode(model, input_ids, attention_mask)
    hidden = decode(model, encoded, attention_mask, model._shift_right(labels))
    logits = lm_logits(model, hidden)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100)


def encode(
    model: T5ForConditionalGeneration, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The encoder's last hidden states (after its final norm and dropout)."""
    stack = model.encoder
    h = dropout(stack.embed_tokens(input_ids), _p(model), model.training)
    bias = _position_bias(stack.block[0].layer[0].SelfAttention, input_ids.shape[1], True)
    bias = bias + _padding(attention_mask, bias.dtype)
    for block in stack.block:
        h = _self_attention(model, block.layer[0], h, bias)
        h = _feed_forward(model, block.layer[-1], h)
    return dropout(_norm(stack.final_layer_norm, h), _p(model), model.training)


def decode(
    model: T5ForConditionalGeneration,
    encoded: torch.Tensor,
    encoder_mask: torch.Tensor,
    decoder_input_ids: torch.Tensor,
    decoder_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The decoder's last hidden states (after its final norm and dropout, before the LM head's
    rescaling), teacher-forced on `decoder_input_ids`; `decoder_mask` marks its real tokens."""
    stack = model.decoder
    h = dropout(stack.embed_tokens(decoder_input_ids), _p(model), model.training)
    length = decoder_input_ids.shape[1]
    bias = _position_bias(stack.block[0].layer[0].SelfAttention, length, False)
    causal = torch.ones(length, length, dtype=torch.bool, device=h.device).tril()
    bias = bias.masked_fill(~causal, torch.finfo(bias.dtype).min)
    if decoder_mask is not None:
        bias = bias + _padding(decoder_mask, bias.dtype)
    cross = _padding(encoder_mask, bias.dtype)
    for block in stack.block:
        h = _self_attention(model, block.layer[0], h, bias)
        h = _cross_attention(model, block.layer[1], h, encoded, cross)
        h = _feed_forward(model, block.layer[-1], h)
    return dropout(_norm(stack.final_layer_norm, h), _p(model), model.training)


def lm_logits(model: T5ForConditionalGeneration, hidden: torch.Tensor) -> torch.Tensor:
    config = model.config
    if getattr(config, "scale_decoder_outputs", config.tie_word_embeddings):
        hidden = hidden * (config.d_model**-0.5)
    return model.lm_head(hidden)


def _p(model) -> float:
    return model.config.dropout_rate


def _position_bias(att, length: int, bidirectional: bool) -> torch.Tensor:
    """(1, heads, length, length) relative position bias of self-attention, as `compute_bias`
    gives it. The bias depends only on key minus query position, so it is looked up for the
    2 * length - 1 distances and laid out by `unfold`: the gradient then sums over diagonals
    instead of scattering length^2 rows into the bias table (a tenth of a training step's time at
    source lengths near 600)."""
    weight = att.relative_attention_bias.weight
    distance = torch.arange(1 - length, length, device=weight.device)
    buckets = att._relative_position_bucket(
        distance,
        bidirectional=bidirectional,
        num_buckets=att.relative_attention_num_buckets,
        max_distance=att.relative_attention_max_distance,
    )
    table = F.embedding(buckets, weight).T  # (heads, 2 * length - 1): distance -(length-1)..
    # Window s holds distances s - (length - 1) .. s; query i needs window length - 1 - i.
    return table.unfold(-1, length, 1).flip(1).unsqueeze(0)


def _padding(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, 1, L) additive mask: 0 on real tokens, the dtype's minimum on padding."""
    pad = (mask[:, None, None, :] == 0).to(dtype)
    return pad * torch.finfo(dtype).min


def _norm(norm: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """T5's RMS norm: fused where the whole computation is float32, else written out as HF does."""
    weight = norm.weight
    if h.dtype == weight.dtype == torch.float32 and not torch.is_autocast_enabled(h.device.type):
        return F.rms_norm(h, (h.shape[-1],), weight, norm.variance_epsilon)
    variance = h.to(torch.float32).pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + norm.variance_epsilon)
    if weight.dtype in (torch.float16, torch.bfloat16):
        h = h.to(weight.dtype)
    return weight * h


def _self_attention(model, layer, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    att = layer.SelfAttention
    x = _norm(layer.layer_norm, h)
    qkv = F.linear(x, _qkv_weight(att))
    q, k, v = qkv.view(*x.shape[:2], 3, att.n_heads, att.key_value_proj_dim).permute(2, 0, 3, 1, 4)
    return h + dropout(_attend(model, att, q, k, v, bias), _p(model), model.training)


def _qkv_weight(att) -> torch.Tensor:
    return torch.cat([att.q.weight, att.k.weight, att.v.weight])


def _cross_attention(
    model, layer, h: torch.Tensor, encoded: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    att = layer.EncDecAttention
    x = _norm(layer.layer_norm, h)
    heads, size = att.n_heads, att.key_value_proj_dim
    q = att.q(x).view(*x.shape[:2], heads, size).transpose(1, 2)
    kv = F.linear(encoded, torch.cat([att.k.weight, att.v.weight]))
    k, v = kv.view(*encoded.shape[:2], 2, heads, size).permute(2, 0, 3, 1, 4)
    return h + dropout(_attend(model, att, q, k, v, mask), _p(model), model.training)


def _attend(model, att, q, k, v, bias: torch.Tensor) -> torch.Tensor:
    """Softmax(q k^T + bias) v over heads, T5-style (no 1/sqrt(d) scaling), then the output
    projection. Attention dropout's scale is applied after the value matmul, on the smaller
    tensor. Without gradients (rollout log-probs, the reference) torch's fused attention kernel
    runs instead: 3x faster on CPU, but it gives no gradient for the bias."""
    dropping = model.training and _p(model) > 0.0
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, bias))
    if not needs_grad and not dropping:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)
    else:
        # In place: the matmul's backward needs its inputs, not its output.
        scores = torch.matmul(q, k.transpose(-1, -2)).add_(bias)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
        scale = 1.0
        if dropping:
            probs, scale = _dropped(probs, _p(model))
        out = torch.matmul(probs, v)
        if scale != 1.0:
            out = out * scale
    batch, heads, length, size = out.shape
    return att.o(out.transpose(1, 2).reshape(batch, length, heads * size))


def _feed_forward(model, layer, h: torch.Tensor) -> torch.Tensor:
    dense = layer.DenseReluDense
    x = _norm(layer.layer_norm, h)
    if hasattr(dense, "wi_0"):
        x = dense.act(dense.wi_0(x)) * dense.wi_1(x)
    else:
        x = dense.act(dense.wi(x))
    x = dropout(x, _p(model), model.training)
    if x.dtype != dense.wo.weight.dtype and dense.wo.weight.dtype != torch.int8:
        x = x.to(dense.wo.weight.dtype)
    return h + dropout(dense.wo(x), _p(model), model.training)
