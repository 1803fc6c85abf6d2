"""Pure tensor functions of PPO over decoder tokens: loss aggregation, rewards, GAE and losses
(masked statistics are in `masked`, score normalisation in `scores`).

Conventions: per-token tensors are (batch, T) over the decoder tokens of each sampled response;
`mask` is float, 1 for real tokens (including the final EOS) and 0 for right padding.
"""

from __future__ import annotations

import torch

from lmgcot.rl.masked import masked_mean

# token_mean: every real token of the minibatch weighs the same (long rationales weigh more);
# seq_mean: mean over each rationale's tokens, then over rationales (GRPO's original);
# sum_norm: sum over each rationale's tokens divided by a constant (max_new_tokens), then mean
# over rationales (Dr. GRPO: no length bias, the plain REINFORCE gradient up to a constant).
LOSS_AGGREGATIONS = ("token_mean", "seq_mean", "sum_norm")


def aggregate(
    per_token: torch.Tensor, mask: torch.Tensor, how: str, max_new_tokens: int | None = None
) -> torch.Tensor:
    """Reduce a (batch, T) per-token loss to a scalar over the real tokens (`LOSS_AGGREGATIONS`)."""
    mask = mask.to(per_token.dtype)
    if how == "token_mean":
        return (per_token * mask).sum() / mask.sum().clamp_min(1.0)
    per_row = (per_token * mask).sum(dim=1)
    if how == "seq_mean":
        return (per_row / mask.sum(dim=1).clamp_min(1.0)).mean()
    if how == "sum_norm":
        if not max_new_tokens:
            raise ValueError("loss aggregation sum_norm needs max_new_tokens")
        return (per_row / max_new_tokens).mean()
    raise ValueError(f"rl.loss_agg={how!r}: allowed values are {list(LOSS_AGGREGATIONS)}")


def token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards: a KL penalty on every real token plus each row's score at its last token.

    Args:
        scores: (batch,) terminal reward of each response (e.g. the large LM's answer quality).
        kl: (batch, T) per-token KL estimate against the reference model (see `kl_estimate`).
        mask: (batch, T) 0/1 floats; each row needs at least one real token (the EOS). A row with a
            single real token (an EOS-only response) gets its score at position 0.
        kl_coef: the KL penalty coefficient beta (>= 0).

    Returns:
        (batch, T) rewards, 0 on padding. Inputs should be detached: rewards are constants in PPO.
    """
    if kl.shape != mask.shape or scores.shape != kl.shape[:1]:
        raise ValueError(
            f"shapes: scores {tuple(scores.shape)} must be (batch,) and kl {tuple(kl.shape)} "
            f"must match mask {tuple(mask.shape)}"
        )
    mask = mask.to(kl.dtype)
    empty = mask.sum(dim=1) == 0
    if empty.any():
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(f"rows {rows} have no real tokens; every response holds at least its EOS")
    rewards = -kl_coef * kl * mask
    last = _last_real_index(mask)
    return rewards.scatter_add(1, last[:, None], scores.to(kl.dtype)[:, None])


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each response, terminal after its last real token.

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, where V and A
    past a row's last real token are 0 (the episode ends with the response).

    Args:
        rewards: (batch, T) per-token rewards (see `token_rewards`).
        values: (batch, T) value estimates V(s_t) from the rollout (detached here).
        mask: (batch, T) 0/1 floats, right-padded.
        gamma: discount factor in [0, 1] (1 is usual for short responses).
        lam: GAE lambda in [0, 1]; trades bias (0: one-step TD) against variance (1: Monte Carlo).

    Returns:
        (advantages, returns), each (batch, T) and 0 on padding; returns = advantages + values are
        the value-function targets.
    """
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma={gamma} and lam={lam} must lie in [0, 1]")
    if rewards.shape != values.shape or rewards.shape != mask.shape:
        raise ValueError(
            f"shapes differ: rewards {tuple(rewards.shape)}, values {tuple(values.shape)}, "
            f"mask {tuple(mask.shape)}"
        )
    rewards, values = rewards.detach(), values.detach()
    mask = mask.to(values.dtype)
    # Masking the values makes every padded position look terminal to the step before it.
    values = values * mask
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        # Multiplying by the mask zeroes padded positions, which then carry nothing backwards.
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    returns = (advantages + values) * mask
    return advantages, returns


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    agg: str = "token_mean",
    max_new_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate loss: max(-A * ratio, -A * clip(ratio, 1 +- eps)) aggregated over the
    real tokens by `agg` (see `aggregate`; `token_mean` is the masked mean).

    Args:
        logprobs: (batch, T) log-probs of the sampled tokens under the policy being optimised.
        old_logprobs: (batch, T) the same under the rollout policy (detached here).
        advantages: (batch, T) advantage estimates (detached here).
        mask: (batch, T) 0/1 floats.
        clip_range: epsilon, how far the probability ratio may move from 1 before the gradient
            stops (> 0; 0.2 is usual).
        agg: how per-token terms become one loss (`LOSS_AGGREGATIONS`).
        max_new_tokens: the constant of the `sum_norm` aggregation.

    Returns:
        (loss, clipfrac, approx_kl): the scalar loss to minimise; the fraction of real tokens where
        the clipped term was active; masked mean of 0.5 * (logp - old_logp)^2. The last two are
        detached diagnostics.
    """
    if clip_range <= 0:
        raise ValueError(f"rl.clip_range={clip_range}: must be > 0")
    old_logprobs, advantages = old_logprobs.detach(), advantages.detach()
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = aggregate(torch.maximum(unclipped, clipped), mask, agg, max_new_tokens)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
        approx_kl = masked_mean(0.5 * log_ratio**2, mask)
    return loss, clipfrac, approx_kl


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: masked mean of 0.5 * max((v - R)^2, (clip(v, old +- c) - R)^2).

    Args:
        values: (batch, T) current value predictions.
        old_values: (batch, T) predictions at rollout time (detached here).
        returns: (batch, T) value targets from `gae` (detached here).
        mask: (batch, T) 0/1 floats.
        clip_range_value: c, how far a prediction may move from its rollout value before its
            gradient stops (> 0; None disables clipping).

    Returns:
        (loss, clipfrac): the scalar loss and the detached fraction of real tokens where the clipped
        term was the larger.
    """
    old_values, returns = old_values.detach(), returns.detach()
    unclipped = (values - returns) ** 2
    if clip_range_value is None:
        return 0.5 * masked_mean(unclipped, mask), torch.zeros((), dtype=values.dtype)
    if clip_range_value <= 0:
        raise ValueError(f"rl.clip_range_value={clip_range_value}: must be > 0 (or null)")
    clipped_values = old_values + (values - old_values).clamp(-clip_range_value, clip_range_value)
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).to(values.dtype), mask)
    return loss, clipfrac


def _last_real_index(mask: torch.Tensor) -> torch.Tensor:
    """(batch,) index of each row's last nonzero mask entry (0 for an all-zero row)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    # argmax of position * mask finds the last real token even if the mask is not contiguous.
    return (positions * (mask > 0)).argmax(dim=1)
