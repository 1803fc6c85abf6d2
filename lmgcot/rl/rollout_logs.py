"""What `RationaleRefiner` logs of a rollout: its metrics, each reward component's spread within
questions (with a warning for weighted components that have none), and tables of samples."""

from __future__ import annotations

import logging
from typing import Any

import torch

from lmgcot.rl.policy_gradient import within_group_std
from lmgcot.rl.rollout import Advantages, Rollout, RolloutLogprobs

log = logging.getLogger("lmgcot")


class RolloutLogsMixin:
    """The host is a LightningModule with `weighted_components`, `rollouts_done`, the sample
    table settings and `_warned_no_spread` (the components already warned about)."""

    def _log_rollout(
        self,
        rollout: Rollout,
        logprobs: RolloutLogprobs,
        targets: Advantages,
        rewards: dict[str, list],
        stats: dict[str, torch.Tensor],
    ) -> None:
        metrics = {
            "rl/kl": targets.sequence_kl.mean(),
            "rl/kl_coef": targets.kl_coef,
            "rl/entropy": logprobs.entropy,
            "rl/response_length": rollout.lengths.float().mean(),
            **targets.diagnostics,
            **stats,
        }
        metrics.update(reward_means(rewards, "rewards/{}/mean"))
        metrics.update(self._reward_spreads(rewards, rollout.groups))
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=rollout.n)

    def _reward_spreads(self, rewards: dict[str, list], groups: torch.Tensor) -> dict[str, float]:
        """`rewards/<name>/spread`: each component's mean std within questions (over the batch
        with one sample per question); warns once per weighted component that has none."""
        out = {}
        for name, values in rewards.items():
            if any(v is None for v in values):
                continue
            spread = within_group_std(torch.tensor(values, dtype=torch.float64), groups.cpu())
            out[f"rewards/{name}/spread"] = spread
            if (
                name in self.weighted_components
                and spread == 0
                and name not in self._warned_no_spread
            ):
                self._warned_no_spread.add(name)
                log.warning(
                    "refine: reward component %r has no spread within questions at rollout %d: "
                    "it gives the update no signal (constant for this student's samples?)",
                    name,
                    self.rollouts_done + 1,
                )
        return out

    def _log_samples(
        self, samples: dict[str, Any], rationales: list[str], rewards: dict[str, list], n: int
    ) -> None:
        if (
            self.sample_logger is None
            or self.log_samples_every <= 0
            or (self.rollouts_done - 1) % self.log_samples_every != 0
        ):
            return
        shown = samples.get("questions", samples["inputs"])
        rows = []
        for i in range(min(n, self.num_samples_logged)):
            row = {"input": shown[i], "rationale": rationales[i]}
            row.update({name: values[i] for name, values in rewards.items()})
            rows.append(row)
        self.sample_logger(self.rollouts_done, rows)


def reward_means(rewards: dict[str, list], template: str) -> dict[str, float]:
    """Mean of every reward component over the samples that have a value (None: missing)."""
    out = {}
    for name, values in rewards.items():
        present = [float(v) for v in values if v is not None]
        if present:
            out[template.format(name)] = sum(present) / len(present)
    return out
