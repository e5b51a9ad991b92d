"""Progress as plain lines, for where a bar cannot be drawn (a pod's log, CI, a pipe): one line every few seconds
with the epoch, the step, the speed and what is left of the epoch and of the run."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger("odeon")


def format_duration(seconds: float) -> str:
    """``1h05m``, ``3m07s``, ``42s``: a duration as a log line shows it."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def draws_bars() -> bool:
    """Whether progress bars suit the console: standard error is a terminal (not a pod's log, a file or a pipe)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressLines(pl.Callback):
    """A line every ``every`` seconds during training and validation (first process only), such as::

        epoch 3/1000, step 120/400 (35.2 samples/s), epoch ETA 1m20s, run ETA 10h05m

    The run's ETA counts the epochs left at the mean length of those done (before the first ends: this epoch's
    training at the current speed, plus its validation in proportion to its batches); early stopping may end the
    run sooner."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.last = self.epoch_started = self.run_started = time.monotonic()
        self.samples = 0
        self.epochs_done = 0
        self.epoch_seconds = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.run_started = self.last = time.monotonic()
        self.epochs_done, self.epoch_seconds = 0, 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_started, self.samples = time.monotonic(), 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs_done += 1
        self.epoch_seconds += time.monotonic() - self.epoch_started

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.samples += _batch_size(batch) * max(trainer.world_size, 1)
        if trainer.is_global_zero and time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            log.info("%s", self.training_line(trainer, batch_idx + 1))

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        total = _total(trainer.num_val_batches)
        log.info(
            "epoch %d/%d, validation step %d/%s", trainer.current_epoch + 1, trainer.max_epochs, batch_idx + 1, total
        )

    def training_line(self, trainer: pl.Trainer, step: int) -> str:
        total = _total(trainer.num_training_batches)
        elapsed = max(time.monotonic() - self.epoch_started, 1e-9)
        line = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}, step {step}/{total or '?'}"
        line += f" ({self.samples / elapsed:.1f} samples/s)"
        if not total or step == 0:
            return line
        training_left = (total - step) * elapsed / step
        line += f", epoch ETA {format_duration(training_left)}"
        if self.epochs_done:
            epoch = self.epoch_seconds / self.epochs_done
        else:  # no epoch finished yet: its training at this speed, its validation in proportion to its batches
            epoch = total * elapsed / step * (1 + (_total(trainer.num_val_batches) or 0) / total)
        epochs_left = max((trainer.max_epochs or 0) - trainer.current_epoch - 1, 0)
        return line + f", run ETA {format_duration(training_left + epochs_left * epoch)}"


def _total(batches: Any) -> int | None:
    """A count of batches as Lightning gives it (a number, a list per loader, or infinity), as a whole number."""
    if isinstance(batches, list):
        batches = sum(batches)
    try:
        return int(batches) if batches is not None and batches != float("inf") else None
    except (TypeError, ValueError, OverflowError):
        return None


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        batch = batch.get("image", next(iter(batch.values()), None))
    elif isinstance(batch, (list, tuple)):
        batch = batch[0] if batch else None
    return int(batch.shape[0]) if hasattr(batch, "shape") and len(batch.shape) else 1
