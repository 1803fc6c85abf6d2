"""Numerical core of RL for seq2seq students: KL penalties, advantages (GAE and critic-free), losses,
a value head."""

from lmgcot.rl.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    kl_estimate,
)
from lmgcot.rl.masked import (
    entropy_from_logits,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
)
from lmgcot.rl.policy_gradient import (
    ALGORITHMS,
    group_advantages,
    rloo_advantages,
    sequence_advantages,
)
from lmgcot.rl.ppo_math import (
    LOSS_AGGREGATIONS,
    aggregate,
    gae,
    policy_loss,
    token_rewards,
    value_loss,
)
from lmgcot.rl.scores import RunningMeanStd, clip_scores, normalize_scores
from lmgcot.rl.value_head import ValueHead

__all__ = [
    "ALGORITHMS",
    "LOSS_AGGREGATIONS",
    "aggregate",
    "group_advantages",
    "rloo_advantages",
    "sequence_advantages",
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
    "token_rewards",
    "value_loss",
]
