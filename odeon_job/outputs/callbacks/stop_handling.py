"""The Lightning side of a SIGTERM stop (:mod:`odeon_job.process.shutdown` holds the signal side): from the first
training batch on, SIGTERM is left to Lightning's loops (registered at fit start); a run stopped before any
validation saves its current state, so that a restarted pod resumes rather than starts over."""

from __future__ import annotations

import logging

import pytorch_lightning as pl

from odeon_job import storage
from odeon_job.process.shutdown import GracefulStop, is_sigterm_stop

log = logging.getLogger("odeon")


class StopHandling(pl.Callback):
    """Tells ``stop`` when training starts; saves to ``checkpoint`` a run stopped by SIGTERM that has none yet.
    Every process takes part (saving is collective under DDP); the first decides."""

    def __init__(self, stop: GracefulStop, checkpoint: str) -> None:
        self.stop, self.checkpoint = stop, checkpoint

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop.training = True

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not is_sigterm_stop(exception) or trainer.state.fn != "fit":
            return
        if trainer.strategy.broadcast(not storage.exists(self.checkpoint)):
            trainer.save_checkpoint(self.checkpoint)
            log.warning("SIGTERM before the first validation: saved the current state to %s", self.checkpoint)
