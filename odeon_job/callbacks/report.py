"""One line per validation run on the console: losses, mIoU, learning rate and time."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl
import torch

from odeon_job.callbacks.history import learning_rate

log = logging.getLogger("odeon")


class ValidationReport(pl.Callback):
    def __init__(self) -> None:
        self._loss_sum: torch.Tensor | None = None  # on the loss's device: no sync per batch
        self._batches = 0
        self._started = time.monotonic()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._loss_sum, self._batches, self._started = None, 0, time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            loss = loss.detach().float()
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._batches += 1

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        evaluation = pl_module.evaluation["val"]
        train_loss = f"{float(self._loss_sum) / self._batches:.4f}" if self._loss_sum is not None else "-"
        lr = learning_rate(trainer)
        total = int(evaluation.confusion.sum()) + evaluation.ignored
        ignored = f"  ({evaluation.ignored / total:.1%} of val pixels ignored)" if evaluation.ignored else ""
        log.info("epoch %d/%d: train_loss %s  val_loss %.4f  val_miou %.4f  lr %s  (%.1f s)%s",
                 trainer.current_epoch + 1, trainer.max_epochs, train_loss, evaluation.loss, evaluation.miou,
                 f"{lr:.3g}" if lr is not None else "-", time.monotonic() - self._started, ignored)
