"""The Lightning side of a SIGTERM stop (:mod:`odeon_job.process.shutdown` holds the signal side): from the sanity
check on, SIGTERM is left to Lightning's loops (registered at fit start); a run stopped before any
validation saves its current state, so that a restarted pod resumes rather than starts over. Lightning's prediction
loop does not look at SIGTERM: :class:`PredictionStop` stops it after the batch in hand."""

from __future__ import annotations

import logging

import pytorch_lightning as pl

from odeon_job import storage
from odeon_job.process.shutdown import GracefulStop, Terminated, is_sigterm_stop

log = logging.getLogger("odeon")


class StopHandling(pl.Callback):
    """Tells ``stop`` when training starts; saves to ``checkpoint`` a run stopped by SIGTERM that has none yet.
    Every process takes part (saving is collective under DDP); the first decides."""

    def __init__(self, stop: GracefulStop, checkpoint: str) -> None:
        self.stop, self.checkpoint = stop, checkpoint

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop.loop_running = True  # (Lightning's evaluation loop stops after the batch in hand too)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop.loop_running = True

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not is_sigterm_stop(exception) or trainer.state.fn != "fit":
            return
        if trainer.strategy.broadcast(not storage.exists(self.checkpoint)):
            trainer.save_checkpoint(self.checkpoint)
            log.warning("SIGTERM before the first validation: saved the current state to %s", self.checkpoint)


class PredictionStop(pl.Callback):
    """Stops a prediction at SIGTERM once the batch in hand is written (the callbacks before this one, such as the
    stitcher, have handled it): ``message`` says what is left."""

    def __init__(self, stop: GracefulStop, message: str) -> None:
        self.stop, self.message = stop, message

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop.loop_running = True

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.stop.received_at is not None:
            raise Terminated(self.message)
