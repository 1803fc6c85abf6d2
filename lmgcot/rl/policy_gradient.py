"""Critic-free policy-gradient estimators: sequence advantages from groups of samples per question,
loss aggregation over tokens, and the diagnostics that say whether the reward reaches the update.

Conventions: `scores` is (n,), one reward per sampled rationale; `groups` is (n,) long, the
question each sample was drawn for (samples of one question share an id). Advantages are per
sequence and get broadcast to the sequence's tokens by the caller.

- `reinforce`: A_i = r_i - mean(r) over the batch (one baseline for everything).
- `rloo`: A_i = r_i - mean of the other samples of the same question (leave-one-out, unbiased;
  Ahmadian et al. 2024). Needs >= 2 samples per question.
- `grpo`: A_i = (r_i - mean of its group) / (std + eps), the std taken over the group (`group`),
  over the batch (`batch`) or not at all (`none`, as Dr. GRPO recommends against the bias towards
  questions that are all-right or all-wrong).
"""

from __future__ import annotations

import torch

from lmgcot.rl.masked import masked_var

ALGORITHMS = ("ppo", "rloo", "grpo", "reinforce")
CRITIC_FREE = ("rloo", "grpo", "reinforce")
# Estimators whose baseline comes from the other samples of the same question: they need k >= 2.
GROUP_BASELINES = ("rloo", "grpo")
GRPO_SCALES = ("group", "batch", "none")
GROUP_STD_EPS = 1e-4


def sequence_advantages(
    algorithm: str, scores: torch.Tensor, groups: torch.Tensor, grpo_scale: str = "group"
) -> torch.Tensor:
    """(n,) advantages of the critic-free `algorithm` (`reinforce`, `rloo` or `grpo`)."""
    if algorithm == "reinforce":
        return scores - scores.mean()
    if algorithm == "rloo":
        return rloo_advantages(scores, groups)
    if algorithm == "grpo":
        return group_advantages(scores, groups, grpo_scale)
    raise ValueError(f"rl.algorithm={algorithm!r}: no sequence advantages; use {CRITIC_FREE}")


def rloo_advantages(scores: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """r_i minus the mean of the other samples of its question: k/(k-1) * (r_i - group mean).

    Raises ValueError when a question has a single sample (it has no others to compare with).
    """
    sums, counts = group_sums(scores, groups)
    if (counts[groups] < 2).any():
        raise ValueError("rloo needs >= 2 samples per question (rl.samples_per_question)")
    others = (sums[groups] - scores) / (counts[groups] - 1)
    return scores - others


def group_advantages(scores: torch.Tensor, groups: torch.Tensor, scale: str) -> torch.Tensor:
    """(r_i - mean of its question's samples), divided by a std as `scale` says (GRPO_SCALES).

    The group std is the unbiased one (0 for a single sample); eps keeps all-equal groups at 0.
    """
    if scale not in GRPO_SCALES:
        raise ValueError(f"rl.grpo_scale={scale!r}: allowed values are {list(GRPO_SCALES)}")
    centred = scores - group_means(scores, groups)[groups]
    if scale == "none":
        return centred
    if scale == "batch":
        std = scores.std() if scores.numel() > 1 else scores.new_zeros(())
        return centred / (std + GROUP_STD_EPS)
    return centred / (group_stds(scores, groups)[groups] + GROUP_STD_EPS)


# -- per-group statistics and diagnostics --------------------------------------------------------


def group_sums(x: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of x per group id, number of samples per group id), each (max id + 1,)."""
    size = int(groups.max()) + 1 if groups.numel() else 0
    sums = x.new_zeros(size).index_add(0, groups, x)
    counts = x.new_zeros(size).index_add(0, groups, torch.ones_like(x))
    return sums, counts


def group_means(x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    sums, counts = group_sums(x, groups)
    return sums / counts.clamp_min(1.0)


def group_stds(x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Unbiased std per group id (0 for groups of one)."""
    sums, counts = group_sums(x, groups)
    means = sums / counts.clamp_min(1.0)
    sq, _ = group_sums((x - means[groups]) ** 2, groups)
    return torch.where(counts > 1, (sq / (counts - 1).clamp_min(1.0)).sqrt(), torch.zeros_like(sq))


def within_group_std(x: torch.Tensor, groups: torch.Tensor) -> float:
    """Mean over questions with >= 2 samples of the std of their samples' x; with one sample per
    question, the std over the batch (the only spread there is). NaN for fewer than 2 samples."""
    _, counts = group_sums(x, groups)
    multi = counts > 1
    if multi.any():
        return float(group_stds(x, groups)[multi].mean())
    return float(x.std()) if x.numel() > 1 else float("nan")


def correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two (n,) tensors; NaN when either is constant."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denom = (x.pow(2).sum() * y.pow(2).sum()).sqrt()
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def explained_variance(
    values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """1 - Var(returns - values) / Var(returns) over real tokens: 1 is a perfect critic, 0 one no
    better than a constant, below 0 one that adds noise to the advantages."""
    var = masked_var(returns, mask)
    residual = masked_var(returns - values, mask)
    return torch.where(var > 0, 1 - residual / var.clamp_min(1e-12), torch.zeros_like(var))
