"""Terminal scores before they become advantages: clipped, or standardised by running statistics
that a checkpoint keeps."""

from __future__ import annotations

import math

import torch


def clip_scores(scores: torch.Tensor, clip: float | None) -> torch.Tensor:
    """Clamp scores to [-clip, clip] so one outlier reward cannot dominate an update.

    Args:
        scores: any shape.
        clip: bound (> 0); None returns the scores unchanged.
    """
    if clip is None:
        return scores
    if clip <= 0:
        raise ValueError(f"rl.score_clip={clip}: must be > 0 (or null)")
    return scores.clamp(-clip, clip)


def normalize_scores(
    scores: torch.Tensor,
    running_mean_std: RunningMeanStd,
    shift_mean: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Standardise scores by running statistics (which this does not update: call `update` first).

    Args:
        scores: any shape.
        running_mean_std: statistics of the scores seen so far.
        shift_mean: also subtract the running mean (False only rescales, keeping the sign).
        eps: added to the std, for constant scores.
    """
    mean = running_mean_std.mean if shift_mean else 0.0
    return (scores - mean) / (running_mean_std.std + eps)


class RunningMeanStd:
    """Running mean and (population) variance of a stream of scores; checkpointable."""

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = 0

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def update(self, x: torch.Tensor) -> None:
        """Fold a batch in, combining batch and running moments (Chan et al.'s parallel formula)."""
        x = x.detach().double().flatten()
        n = x.numel()
        if n == 0:
            return
        batch_mean = x.mean().item()
        batch_var = x.var(unbiased=False).item()
        if self.count == 0:
            self.mean, self.var, self.count = batch_mean, batch_var, n
            return
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var = float(state["mean"]), float(state["var"])
        self.count = int(state["count"])
