"""The training progress bar, without Lightning's "Epoch 0/-2" when a run counts steps, not epochs.

Lightning's rich bar prints `max_epochs - 1` as the last epoch; refine trains with max_epochs=-1
(its length is rollouts, in optimiser steps), so the bar read "Epoch 0/-2".
"""

from __future__ import annotations

from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar
from pytorch_lightning.utilities.imports import _RICH_AVAILABLE


class StepsProgressBar(RichProgressBar):
    """RichProgressBar that names the epoch without a total when there is none."""

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        text = f"Epoch {current_epoch}"
        return f"{text:{len(self.validation_description)}}"  # as wide as the validation bar


def progress_bar() -> RichProgressBar | TQDMProgressBar:
    """The bar Lightning would pick (rich when installed); tqdm's has no epoch total to fix."""
    return StepsProgressBar() if _RICH_AVAILABLE else TQDMProgressBar()
