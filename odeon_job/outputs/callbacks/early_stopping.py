"""Early stopping that says when and why it stopped the training (Lightning's own says it at INFO on its
logger only when ``verbose``, in words about "records")."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping

log = logging.getLogger("odeon")


class ReportingEarlyStopping(EarlyStopping):
    def _evaluate_stopping_criteria(self, current: torch.Tensor) -> tuple[bool, str | None]:
        should_stop, reason = super()._evaluate_stopping_criteria(current)
        if should_stop:
            self.stop_reason = reason
        return should_stop, reason

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        reason = getattr(self, "stop_reason", None)
        if reason is None or not trainer.is_global_zero:
            return
        if "did not improve" in reason:
            log.info(
                "early stopping: %s has not improved by more than %g for %d validation(s) (best %.4f); the "
                "training stopped after epoch %d of %d",
                self.monitor,
                abs(self.min_delta),
                self.wait_count,
                float(self.best_score),
                self.stopped_epoch + 1,
                trainer.max_epochs,
            )
        else:
            log.info(
                "early stopping: %s; the training stopped after epoch %d of %d",
                reason.rstrip("."),
                self.stopped_epoch + 1,
                trainer.max_epochs,
            )
