"""`RationaleDistiller`: fine-tunes the student seq2seq LM on (context, question) -> rationale."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from transformers import PreTrainedModel

from lmgcot.student import fast_t5
from lmgcot.student.optim import build_optimizer

PAIR_KEYS = {"input_ids", "attention_mask", "labels"}


class RationaleDistiller(pl.LightningModule):
    """Teacher-forced cross-entropy on the student's targets (`distill.objective`). A multitask
    batch ({task: batch}) is weighted by `task_weights`: distilling step-by-step's
    alpha * predict + (1 - alpha) * explain, each term the token mean of its own task. The optimiser
    and scheduler come from config as partials and are finished here, where the parameters and
    step count are known. With `fast_forward` a T5 student's loss goes through `fast_t5`: the same
    computation in fewer operations; other students, and validation too, use the model's own."""

    def __init__(
        self,
        model: PreTrainedModel,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        task_weights: dict[str, float] | None = None,
        fast_forward: bool = True,
    ):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.task_weights = dict(task_weights or {})
        self.fast_forward = fast_forward

    def forward(self, batch: dict) -> torch.Tensor:
        return self.task_losses(batch)["loss"]

    def task_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """{"loss": the weighted total, and per task of a multitask batch its own loss}."""
        if "input_ids" in batch:
            return {"loss": self._loss(batch)}
        unknown = set(batch) - set(self.task_weights)
        if unknown:
            raise ValueError(f"batch tasks {sorted(unknown)} have no weight {self.task_weights}")
        out = {task: self._loss(b) for task, b in batch.items()}
        out["loss"] = sum(self.task_weights[t] * loss for t, loss in out.items())
        return out

    def _loss(self, batch: dict) -> torch.Tensor:
        if self.fast_forward and self.training and set(batch) == PAIR_KEYS:
            if fast_t5.supports(self.model):
                return fast_t5.seq2seq_loss(self.model, **batch)
        return self.model(**batch).loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.task_losses(batch)
        self._log("train", losses, batch)
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._log("val", self.task_losses(batch), batch)

    def _log(self, split: str, losses: dict[str, torch.Tensor], batch: dict) -> None:
        size = _batch_size(batch)
        self.log(f"{split}/loss", losses["loss"], prog_bar=True, batch_size=size)
        for task, loss in losses.items():
            if task != "loss":
                self.log(f"{split}/loss_{task}", loss, batch_size=size)

    def configure_optimizers(self):
        optimizer = self._optimizer()
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(
            optimizer, num_training_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _optimizer(self) -> torch.optim.Optimizer:
        trainer = self._trainer
        clips = bool(trainer is not None and trainer.gradient_clip_val)
        return build_optimizer(self.optimizer_factory, self.model.parameters, trainer, clips)


def _batch_size(batch: dict) -> int:
    if "input_ids" in batch:
        return batch["input_ids"].shape[0]
    return next(iter(batch.values()))["input_ids"].shape[0]
