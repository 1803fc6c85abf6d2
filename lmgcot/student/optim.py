"""Building a configured optimiser for a Lightning module, shared by distillation and RL."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision


def build_optimizer(
    factory: Callable[..., torch.optim.Optimizer],
    params: Callable[[], Iterable[torch.nn.Parameter]],
    trainer: pl.Trainer | None,
    clips: bool,
) -> torch.optim.Optimizer:
    """`factory(params())`. A fused optimiser (`fused: true`, the default: the fastest AdamW on
    CPU) unscales gradients inside its own step, so Lightning's mixed precision refuses to clip
    gradients before it; under mixed precision with clipping (`clips`) it is built unfused."""
    optimizer = factory(params())
    if (
        getattr(optimizer, "_step_supports_amp_scaling", False)
        and clips
        and trainer is not None
        and isinstance(trainer.precision_plugin, MixedPrecision)
    ):
        optimizer = factory(params(), fused=False)
    return optimizer
