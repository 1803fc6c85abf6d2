"""`RationaleDistiller`: fine-tunes the student seq2seq LM on (context, question) -> rationale."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from transformers import PreTrainedModel


class RationaleDistiller(pl.LightningModule):
    """Teacher-forced cross-entropy on the teacher's rationales. The optimiser and scheduler come
    from config as partials and are finished here, where the parameters and step count are known."""

    def __init__(
        self,
        model: PreTrainedModel,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
    ):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(**batch).loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = self(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(
            optimizer, num_training_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
