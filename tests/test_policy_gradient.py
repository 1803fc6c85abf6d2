"""Critic-free estimators and loss aggregation: hand-computed advantages, reductions, diagnostics."""

from __future__ import annotations

import math

import pytest
import torch

from lmgcot.rl import aggregate, group_advantages, policy_loss, rloo_advantages
from lmgcot.rl.policy_gradient import (
    GROUP_STD_EPS,
    correlation,
    explained_variance,
    sequence_advantages,
    within_group_std,
)

pytestmark = pytest.mark.unit

D = torch.float64
# Two questions with three samples each; the second listed out of order on purpose.
SCORES = torch.tensor([1.0, 0.2, 0.0, 0.2, 0.5, 0.8], dtype=D)
GROUPS = torch.tensor([0, 1, 0, 1, 0, 1])


def close(actual: torch.Tensor, expected, tol: float = 1e-9) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=D), atol=tol, rtol=0)


def test_rloo_by_hand():
    # Question 0: 1, 0, 0.5. Each minus the mean of the other two: 1 - 0.25, 0 - 0.75, 0.5 - 0.5.
    # Question 1: 0.2, 0.2, 0.8: 0.2 - 0.5, 0.2 - 0.5, 0.8 - 0.2.
    close(rloo_advantages(SCORES, GROUPS), [0.75, -0.3, -0.75, -0.3, 0.0, 0.6])
    # The leave-one-out baseline is k/(k-1) times the centred score.
    centred = SCORES - torch.tensor([0.5, 0.4, 0.5, 0.4, 0.5, 0.4], dtype=D)
    close(rloo_advantages(SCORES, GROUPS), (1.5 * centred).tolist())


def test_rloo_needs_two_samples_per_question():
    with pytest.raises(ValueError, match="samples_per_question"):
        rloo_advantages(torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0, 0, 1]))


def test_group_advantages_by_hand():
    # Question 0: mean 0.5, centred 0.5, -0.5, 0; unbiased std sqrt(0.5 / 2) = 0.5.
    # Question 1: mean 0.4, centred -0.2, -0.2, 0.4; unbiased std sqrt(0.24 / 2).
    s1 = math.sqrt(0.12)
    e = GROUP_STD_EPS
    close(
        group_advantages(SCORES, GROUPS, "group"),
        [0.5 / (0.5 + e), -0.2 / (s1 + e), -0.5 / (0.5 + e), -0.2 / (s1 + e), 0.0, 0.4 / (s1 + e)],
    )
    centred = [0.5, -0.2, -0.5, -0.2, 0.0, 0.4]
    close(group_advantages(SCORES, GROUPS, "none"), centred)
    batch_std = float(SCORES.std())
    close(group_advantages(SCORES, GROUPS, "batch"), [c / (batch_std + e) for c in centred], 1e-12)
    # A question whose samples all score the same gets 0, not a division by zero.
    flat = group_advantages(torch.tensor([0.3, 0.3], dtype=D), torch.tensor([0, 0]), "group")
    close(flat, [0.0, 0.0])
    with pytest.raises(ValueError, match="grpo_scale"):
        group_advantages(SCORES, GROUPS, "median")


def test_reinforce_uses_the_batch_mean_and_dispatch_checks_the_name():
    close(sequence_advantages("reinforce", SCORES, GROUPS), (SCORES - 0.45).tolist())
    close(sequence_advantages("rloo", SCORES, GROUPS), rloo_advantages(SCORES, GROUPS).tolist())
    with pytest.raises(ValueError, match="rl.algorithm='ppo'"):
        sequence_advantages("ppo", SCORES, GROUPS)


def test_loss_aggregations_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]], dtype=D)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=D)
    close(aggregate(x, mask, "token_mean"), 10 / 4)  # 1 + 2 + 3 + 4 over four real tokens
    close(aggregate(x, mask, "seq_mean"), (6 / 3 + 4 / 1) / 2)
    close(aggregate(x, mask, "sum_norm", max_new_tokens=4), (6 / 4 + 4 / 4) / 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        aggregate(x, mask, "sum_norm")
    with pytest.raises(ValueError, match="rl.loss_agg"):
        aggregate(x, mask, "sum")


def test_policy_loss_with_sequence_advantages_is_reinforce_at_ratio_one():
    """At the rollout policy (ratio 1) the clipped surrogate's gradient is the REINFORCE one:
    -sum_i A_i * grad log p(rationale_i) / (n * max_new_tokens) under sum_norm."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, dtype=D, requires_grad=True)
    tokens = torch.tensor([[1, 2, 3], [4, 0, 0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=D)
    adv = torch.tensor([0.7, -0.4], dtype=D)
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    loss, clipfrac, approx_kl = policy_loss(
        logp, logp.detach(), adv[:, None] * mask, mask, 0.2, agg="sum_norm", max_new_tokens=3
    )
    (grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
    expected_loss = -((logp * mask).sum(1) * adv).sum() / (2 * 3)
    (expected,) = torch.autograd.grad(expected_loss, logits)
    torch.testing.assert_close(grad, expected)
    assert float(clipfrac) == 0.0 and float(approx_kl) == 0.0


def test_diagnostics_by_hand():
    # Question spreads: std of (1, 0, 0.5) is 0.5; of (0.2, 0.2, 0.8) sqrt(0.12).
    assert within_group_std(SCORES, GROUPS) == pytest.approx((0.5 + math.sqrt(0.12)) / 2)
    # One sample per question: the batch's spread is all there is.
    assert within_group_std(SCORES, torch.arange(6)) == pytest.approx(float(SCORES.std()))
    assert correlation(SCORES, 2 * SCORES + 1) == pytest.approx(1.0)
    assert correlation(SCORES, -SCORES) == pytest.approx(-1.0)
    assert math.isnan(correlation(SCORES, torch.ones(6, dtype=D)))
    returns = torch.tensor([[1.0, 2.0], [3.0, 0.0]], dtype=D)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=D)
    close(explained_variance(returns, returns, mask), 1.0)
    # A constant guess at the mean explains nothing.
    close(explained_variance(torch.full_like(returns, 2.0), returns, mask), 0.0)


# --- edges that `make mutate` found untested: two samples per question, singleton and empty
# groups, a batch of one, and explained variance away from a unit variance -----------------------


def test_two_samples_per_question_are_enough_and_the_default_scale_is_the_group_s():
    from lmgcot.rl.policy_gradient import group_means, group_stds

    scores, groups = torch.tensor([1.0, 0.0, 0.25, 0.75], dtype=D), torch.tensor([0, 0, 1, 1])
    # Leave-one-out with k = 2: each score minus the other one.
    close(rloo_advantages(scores, groups), [1.0, -1.0, -0.5, 0.5])
    with pytest.raises(ValueError) as err:
        rloo_advantages(torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0, 0, 1]))
    assert str(err.value) == "rloo needs >= 2 samples per question (rl.samples_per_question)"
    # The unbiased std of two samples is |a - b| / sqrt(2).
    close(group_stds(scores, groups), [1 / math.sqrt(2), 0.5 / math.sqrt(2)])
    assert within_group_std(scores, groups) == pytest.approx((1 + 0.5) / 2 / math.sqrt(2))
    close(group_means(torch.tensor([3.0], dtype=D), torch.tensor([0])), [3.0])
    close(
        sequence_advantages("grpo", scores, groups),
        group_advantages(scores, groups, "group").tolist(),
    )


def test_group_statistics_of_singletons_and_of_nothing():
    from lmgcot.rl.policy_gradient import group_means, group_sums

    # Question ids 0 and 2, one sample each (id 1 has none): one entry per id up to the largest.
    x, groups = torch.tensor([2.0, 5.0], dtype=D), torch.tensor([0, 2])
    sums, counts = group_sums(x, groups)
    close(sums, [2.0, 0.0, 5.0])
    close(counts, [1.0, 0.0, 1.0])
    close(group_means(x, groups), [2.0, 0.0, 5.0])
    sums, counts = group_sums(torch.zeros(0, dtype=D), torch.zeros(0, dtype=torch.long))
    assert sums.shape == counts.shape == (0,)
    # A batch of one: no spread to scale by, so its centred advantage 0 stays 0.
    one = torch.tensor([0.7], dtype=D)
    close(group_advantages(one, torch.tensor([0]), "batch"), [0.0])
    assert math.isnan(within_group_std(one, torch.tensor([0])))
    # Two questions of one sample each: the batch's spread.
    two = torch.tensor([0.0, 1.0], dtype=D)
    assert within_group_std(two, torch.tensor([0, 1])) == pytest.approx(1 / math.sqrt(2))
    close(group_advantages(two, torch.tensor([0, 1]), "batch"), [0.0, 0.0])
    # One question of two samples, scaled by the batch's std of two scores.
    half = 0.5 / (1 / math.sqrt(2) + GROUP_STD_EPS)
    close(group_advantages(two, torch.tensor([0, 0]), "batch"), [-half, half])


def test_explained_variance_away_from_unit_variance():
    returns = torch.tensor([[0.0, 0.5, 1.0]], dtype=D)  # unbiased variance 0.25
    mask = torch.ones(1, 3, dtype=D)
    values = torch.tensor([[0.0, 0.5, 0.5]], dtype=D)  # residual (0, 0, 0.5): variance 1/12
    close(explained_variance(values, returns, mask), 1 - (1 / 12) / 0.25)
    # Returns without variance: nothing to explain, 0 whatever the values.
    flat = torch.full((1, 3), 0.3, dtype=D)
    close(explained_variance(flat, flat, mask), 0.0)
