"""Numerical core of PPO for seq2seq students: KL penalties, advantages, losses, a value head."""

from lmgcot.rl.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    kl_estimate,
)
from lmgcot.rl.ppo_math import (
    RunningMeanStd,
    clip_scores,
    entropy_from_logits,
    gae,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    normalize_scores,
    policy_loss,
    token_rewards,
    value_loss,
)
from lmgcot.rl.value_head import ValueHead, policy_with_value

__all__ = [
    "KL_ESTIMATORS",
    "AdaptiveKLController",
    "FixedKLController",
    "RunningMeanStd",
    "ValueHead",
    "clip_scores",
    "entropy_from_logits",
    "gae",
    "kl_estimate",
    "logprobs_from_logits",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "normalize_scores",
    "policy_loss",
    "policy_with_value",
    "token_rewards",
    "value_loss",
]
