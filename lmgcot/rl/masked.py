"""Masked statistics over per-token tensors, and the per-token log-probs and entropy that RL
reads from a student's logits.

Conventions: per-token tensors are (batch, T) over the decoder tokens of each sampled response;
`mask` is float, 1 for real tokens (including the final EOS) and 0 for right padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None
) -> torch.Tensor:
    """Mean of `x` over entries where `mask` is 1.

    Args:
        x: any shape.
        mask: same shape as `x` (0/1 floats).
        dim: reduce over these dims only (None: over everything, giving a scalar).

    Returns:
        The reduced tensor; 0 where nothing is unmasked (instead of NaN, so one empty row cannot
        poison a batch statistic).
    """
    mask = mask.to(x.dtype)
    total = (x * mask).sum() if dim is None else (x * mask).sum(dim=dim)
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return torch.where(count > 0, total / count.clamp_min(1e-12), torch.zeros_like(total))


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over all entries where `mask` is 1 (a scalar).

    Args:
        x: any shape.
        mask: same shape as `x` (0/1 floats).
        unbiased: apply Bessel's correction n / (n - 1).

    Returns:
        Scalar; 0 when fewer than two entries are unmasked (no spread can be measured, and 0 keeps
        whitening of a batch holding one token finite).
    """
    mask = mask.to(x.dtype)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        var = torch.where(n > 1, var * n / (n - 1).clamp_min(1e-12), torch.zeros_like(var))
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Scale `x` to unit (unbiased) variance over its unmasked entries.

    Args:
        x: any shape.
        mask: same shape as `x` (0/1 floats).
        shift_mean: also subtract the mean (False keeps the original mean, as for rewards whose
            sign carries meaning).
        eps: added to the variance before the square root, for constant inputs.

    Returns:
        Same shape as `x`; padding entries are 0 so they cannot leak into unmasked sums.
    """
    mask = mask.to(x.dtype)
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=True)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens of the entropy of each next-token distribution.

    Args:
        logits: (batch, T, V) unnormalised scores.
        mask: (batch, T) 0/1 floats.

    Returns:
        Scalar, in nats (log V for uniform distributions).
    """
    logp = F.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)
    return masked_mean(entropy, mask)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probability of each label under its position's distribution.

    Args:
        logits: (batch, T, V) unnormalised scores; position t predicts labels[:, t].
        labels: (batch, T) token ids in [0, V); padding must hold a real id such as the pad id
            (not -100), and is masked later by the caller.

    Returns:
        (batch, T) log-probs.
    """
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)}")
    if (labels < 0).any():
        raise ValueError("labels hold negative ids (-100?); put the pad id on padding instead")
    logp = F.log_softmax(logits, dim=-1)
    return logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
