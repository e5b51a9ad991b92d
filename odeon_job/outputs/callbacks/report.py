"""One line per validation run on the console: losses, mIoU, learning rate and time."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl

from odeon_job.outputs.callbacks.history import learning_rate
from odeon_job.training.segmentation_module import segmentation_module

log = logging.getLogger("odeon")


#: The console's short names and what the other outputs call the same figures, shown once above the first line.
LEGEND = (
    "(train_loss, val_loss, val_miou and lr are train/loss, val/loss, val/Average/IoU and train/learning rate in "
    "MLflow; loss, Average/IoU and learning rate in TensorBoard's train and val runs and in history_val.json, "
    "whose keys count epochs from 0)"
)


class ValidationReport(pl.Callback):
    def __init__(self) -> None:
        self._started = time.monotonic()
        self._legend_shown = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.monotonic()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        module = segmentation_module(pl_module)
        evaluation = module.evaluation["val"]
        loss = module.train_loss_so_far()  # this process's pixels of the epoch so far
        train_loss = f"{loss:.4f}" if loss is not None else "-"
        lr = learning_rate(trainer)
        total = int(evaluation.confusion.sum()) + evaluation.ignored
        ignored = f"  ({evaluation.ignored / total:.1%} of val pixels ignored)" if evaluation.ignored else ""
        if not self._legend_shown:
            self._legend_shown = True
            log.info("%s", LEGEND)
        log.info(
            "epoch %d/%d: train_loss %s  val_loss %.4f  val_miou %.4f  lr %s  (%.1f s)%s",
            trainer.current_epoch + 1,
            trainer.max_epochs,
            train_loss,
            evaluation.loss,
            evaluation.miou,
            f"{lr:.3g}" if lr is not None else "-",
            time.monotonic() - self._started,
            ignored,
        )
