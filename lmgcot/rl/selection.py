"""Which policy the refine stage exports: the RL policy only when its val gain is beyond noise.

Each val evaluation scores the greedy policy on the same val questions, so an evaluation can be
compared with the distilled student's question by question. The best evaluation by mean reward is
tested against the distilled student with a one-sided sign test (McNemar's exact test for 0/1
rewards), at `alpha` divided by the number of evaluations it was picked from (Bonferroni): picking
the maximum of several noisy evaluations would otherwise export noise.

An evaluation may also carry a guard (`guard_ok`, `guard_mean`: e.g. the large LM's val EM with the
policy's rationales): one whose guard fell too far below the distilled student's is never exported,
so a reward on one aspect cannot buy its gain with the answers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SignTest:
    wins: int  # questions where the candidate scored higher than the baseline
    losses: int  # ... lower
    ties: int
    p_value: float  # one-sided: P(at least `wins` of wins + losses under a fair coin)


def sign_test(baseline: list[float], candidate: list[float]) -> SignTest:
    """Paired one-sided sign test that `candidate` scores higher than `baseline`.

    Ties carry no information and are dropped; with no untied pair the p-value is 1.
    """
    if len(baseline) != len(candidate):
        raise ValueError(
            f"paired scores differ in length: {len(baseline)} baseline, {len(candidate)} candidate"
        )
    wins = sum(c > b for b, c in zip(baseline, candidate))
    losses = sum(c < b for b, c in zip(baseline, candidate))
    n = wins + losses
    p = sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n if n else 1.0
    return SignTest(wins, losses, len(baseline) - n, min(1.0, p))


@dataclass(frozen=True)
class Selection:
    selected: str  # "rl" or "distilled"
    rollouts: int | None  # the chosen evaluation's rollout count (None: distilled)
    best_rollouts: int | None  # the evaluation with the highest mean (None: none ran)
    best_reward: float | None
    test: SignTest | None  # best evaluation against the distilled student
    threshold: float | None  # alpha / evaluations (None: no test was asked for)
    reason: str
    guard_before: float | None = None  # the distilled student's guard mean (None: no guard)
    guard_best: float | None = None  # the tested evaluation's guard mean

    def summary(self) -> dict:
        return asdict(self)  # the nested SignTest becomes a dict too


def select_policy(
    history: list[dict], alpha: float | None, best_rollouts: int | None = None
) -> Selection:
    """Pick what to export from the val history.

    Args:
        history: one entry per val evaluation, in order: {"rollouts": int, "reward": float,
            "scores": [per-question rewards]}; the entry with rollouts 0 is the distilled student.
        alpha: significance level of the sign test; None exports the best evaluation whenever its
            mean is higher than the distilled student's.
        best_rollouts: the evaluation the best checkpoint was saved at (None: the earliest one
            with the highest mean), so the test is about the weights that would be exported.
    """
    before = next((h for h in history if h["rollouts"] == 0), None)
    evals = [h for h in history if h["rollouts"] > 0]
    if before is None or not evals:
        why = "no val evaluation of the distilled student" if before is None else "no RL evaluation"
        return Selection("distilled", None, None, None, None, None, why)
    matching = [h for h in evals if h["rollouts"] == best_rollouts]
    if best_rollouts is not None and not matching:
        raise ValueError(f"no val evaluation at rollout {best_rollouts} in the history")
    # Otherwise the earliest of equal maxima among the evaluations the guard allows, as the
    # checkpoint callback keeps it.
    eligible = [h for h in evals if h.get("guard_ok", True)] or evals
    best = matching[0] if matching else max(eligible, key=lambda h: (h["reward"], -h["rollouts"]))
    test = sign_test(before["scores"], best["scores"])
    common = dict(
        best_rollouts=best["rollouts"],
        best_reward=best["reward"],
        test=test,
        guard_before=before.get("guard_mean"),
        guard_best=best.get("guard_mean"),
    )
    if not best.get("guard_ok", True):
        reason = (
            f"every val evaluation's guard fell too far: the best one's "
            f"{best['guard_mean']:.4f} against the distilled student's {before['guard_mean']:.4f}"
        )
        return Selection("distilled", None, threshold=None, reason=reason, **common)
    if alpha is None:
        if best["reward"] > before["reward"]:
            return Selection("rl", best["rollouts"], threshold=None, reason="higher mean", **common)
        return Selection("distilled", None, threshold=None, reason="no higher mean", **common)
    threshold = float(alpha) / len(evals)
    if best["reward"] > before["reward"] and test.p_value < threshold:
        reason = f"sign test p={test.p_value:.3g} < {threshold:.3g}"
        return Selection("rl", best["rollouts"], threshold=threshold, reason=reason, **common)
    reason = (
        f"best val reward {best['reward']:.4f} vs {before['reward']:.4f}: sign test "
        f"{test.wins} wins, {test.losses} losses, p={test.p_value:.3g} (needs < {threshold:.3g})"
    )
    return Selection("distilled", None, threshold=threshold, reason=reason, **common)
