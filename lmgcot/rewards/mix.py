"""The reward mix: validated non-negative weights over the task reward and the eight aspects."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from lmgcot.errors import ConfigError
from lmgcot.rewards.aspects import ASPECTS

COMPONENTS: tuple[str, ...] = ("task", *ASPECTS)


class RewardMix:
    """A weighted sum of reward components, checked when built so a bad config fails before training.

    `weights` maps component names (`COMPONENTS`) to non-negative numbers; names left out weigh 0.
    Weights are normalised to sum to 1, so the total reward stays in [0, 1] like its components.
    """

    def __init__(self, weights: Mapping[str, float]):
        checked: dict[str, float] = dict.fromkeys(COMPONENTS, 0.0)
        for name, value in weights.items():
            key = f"reward.weights.{name}"
            if name not in COMPONENTS:
                raise ConfigError(
                    f"{key}: unknown reward component; allowed: {', '.join(COMPONENTS)}"
                )
            # bool is an int subclass, but `true` as a weight is a config mistake, not 1.0.
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key}={value!r}: must be a number")
            if not math.isfinite(value):
                raise ConfigError(f"{key}={value}: must be finite")
            if value < 0:
                raise ConfigError(f"{key}={value}: must be >= 0")
            checked[name] = float(value)
        total = sum(checked.values())
        if total == 0:
            raise ConfigError(
                "reward.weights: all weights are 0; give at least one of "
                f"{', '.join(COMPONENTS)} a positive weight"
            )
        self.weights: dict[str, float] = checked
        self.normalized: dict[str, float] = {k: v / total for k, v in checked.items()}

    @classmethod
    def from_config(cls, reward_cfg: Mapping) -> RewardMix:
        """From a `reward` config group node (its `weights` mapping)."""
        if "weights" not in reward_cfg:
            raise ConfigError(
                "reward.weights: missing; the reward config must map components to weights"
            )
        return cls(reward_cfg["weights"])

    @property
    def active(self) -> tuple[str, ...]:
        """Components with weight > 0, in `COMPONENTS` order: the only ones worth computing."""
        return tuple(name for name in COMPONENTS if self.weights[name] > 0)

    def combine(
        self, components: Mapping[str, Sequence[float | None]]
    ) -> tuple[list[float], dict[str, float]]:
        """(total reward per rationale, log metrics).

        `components` maps names to one value per rationale; every active component is required,
        inactive ones are optional and only logged. A None value (e.g. an unparsable judge reply)
        counts as 0 in the total. Log metrics: `rewards/<name>/mean` over the values that are not
        None (left out when all are None), `rewards/<name>/missing` (the number of Nones, only when
        there are any) and `rewards/total/mean`.
        """
        unknown = [name for name in components if name not in COMPONENTS]
        if unknown:
            raise ValueError(f"unknown reward components {unknown}; known: {', '.join(COMPONENTS)}")
        absent = [name for name in self.active if name not in components]
        if absent:
            raise ValueError(f"active reward components not computed: {', '.join(absent)}")
        sizes = {name: len(values) for name, values in components.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"reward components differ in length: {sizes}")
        n = next(iter(sizes.values()), 0)
        totals = [0.0] * n
        for name in self.active:
            weight = self.normalized[name]
            for i, value in enumerate(components[name]):
                if value is not None:
                    totals[i] += weight * float(value)
        logs: dict[str, float] = {}
        for name, values in components.items():
            present = [float(v) for v in values if v is not None]
            if present:
                logs[f"rewards/{name}/mean"] = sum(present) / len(present)
            if len(present) < len(values):
                logs[f"rewards/{name}/missing"] = float(len(values) - len(present))
        if n:
            logs["rewards/total/mean"] = sum(totals) / n
        return totals, logs

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={self.weights[k]:g}" for k in self.active)
        return f"RewardMix({shown})"
