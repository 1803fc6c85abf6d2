"""Per-token KL estimates against a frozen reference model and KL-coefficient controllers."""

from __future__ import annotations

import math

import torch

KL_ESTIMATORS = ("k1", "k3", "abs")
KL_CONTROLLERS = ("fixed", "adaptive")

# Proportional controller error is clipped so one odd batch cannot swing the coefficient wildly.
_ADAPTIVE_ERROR_CLIP = 0.2


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from log-probs of tokens sampled from the policy.

    Args:
        logprobs: (batch, T) log pi(token) under the policy that sampled the tokens.
        ref_logprobs: (batch, T) log ref(token) under the frozen reference model.
        estimator: `rl.kl_estimator`; `k1` = logp - logq (unbiased, can be negative per token),
            `k3` = (r - 1) - log r with r = q/p (unbiased, always >= 0, lower variance),
            `abs` = |logp - logq| (biased, >= 0).

    Returns:
        (batch, T) tensor; padding positions are not masked (the caller multiplies by its mask).
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"rl.kl_estimator={estimator!r}: allowed values are {KL_ESTIMATORS}")
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)} and ref_logprobs {tuple(ref_logprobs.shape)} differ"
        )
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "abs":
        return log_ratio.abs()
    # k3 with log r = -log_ratio; expm1 keeps precision when the policies are close, and the clamp
    # only guards against rounding (the expression is >= 0 in exact arithmetic).
    log_r = -log_ratio
    return (torch.expm1(log_r) - log_r).clamp_min(0.0)


class FixedKLController:
    """A constant KL coefficient, checkpointable like the adaptive one so callers can swap them."""

    def __init__(self, coef: float):
        """coef: the KL penalty coefficient beta (>= 0; 0 disables the penalty)."""
        _check_coef(coef, "rl.kl_coef")
        self.value = float(coef)

    def update(self, observed_kl: float, n_steps: int) -> None:
        """No-op: the coefficient never changes (arguments accepted for a common interface)."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = _load_value(state)


class AdaptiveKLController:
    """Proportional control of the KL coefficient towards a target KL (Ziegler et al., 2019)."""

    def __init__(self, init_coef: float, target: float, horizon: int | float):
        """
        Args:
            init_coef: starting KL coefficient beta (>= 0).
            target: desired KL per rationale (same units as the `observed_kl` passed to update; > 0).
            horizon: number of samples over which the coefficient may change by ~20%; larger is
                slower (> 0).
        """
        _check_coef(init_coef, "rl.kl_coef")
        if not (math.isfinite(target) and target > 0):
            raise ValueError(f"rl.kl_target={target!r}: must be a positive number")
        if not (math.isfinite(horizon) and horizon > 0):
            raise ValueError(f"rl.kl_horizon={horizon!r}: must be a positive number")
        self.value = float(init_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, observed_kl: float, n_steps: int) -> None:
        """coef *= 1 + clip(observed_kl / target - 1, -0.2, 0.2) * n_steps / horizon.

        Args:
            observed_kl: KL measured on the latest batch (per rationale, like `target`).
            n_steps: how many samples that batch held (>= 0).
        """
        observed_kl = float(observed_kl)
        if not math.isfinite(observed_kl):
            # A NaN here would silently poison every later reward; stop loudly instead.
            raise ValueError(f"observed KL is {observed_kl}; cannot update the KL coefficient")
        if n_steps < 0:
            raise ValueError(f"n_steps={n_steps}: must be >= 0")
        error = min(
            max(observed_kl / self.target - 1.0, -_ADAPTIVE_ERROR_CLIP), _ADAPTIVE_ERROR_CLIP
        )
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        # Only the evolving coefficient: target and horizon come from the config on resume.
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = _load_value(state)


def _check_coef(coef: float, key: str) -> None:
    if not (math.isfinite(coef) and coef >= 0):
        raise ValueError(f"{key}={coef!r}: must be a non-negative number")


def _load_value(state: dict[str, float]) -> float:
    if "value" not in state:
        raise KeyError(f"KL controller state has no 'value' (keys: {sorted(state)})")
    value = float(state["value"])
    _check_coef(value, "KL controller state 'value'")
    return value
