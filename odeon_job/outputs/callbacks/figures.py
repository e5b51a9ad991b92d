"""The run's pictures, drawn once and handed to every logger that shows pictures: after each validation and
test (confusion matrix, IoU per class, sample tiles, and the confusion matrix's numbers as text), the weights'
histograms after each training epoch, and the training curves at the end of the fit. First process only.

The LightningModule computes the evaluation (``pl_module.evaluation[split]``); how it is shown is this
callback's business, as writing it down is the history's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytorch_lightning as pl

from odeon_job.outputs.loggers import TextLogger, WeightsLogger, publish_figure, shows_pictures
from odeon_job.training.plots import confusion_figure, confusion_table, curves_figure, iou_figure, samples_figure
from odeon_job.training.segmentation_module import SegmentationModule, segmentation_module

if TYPE_CHECKING:
    from odeon_job.outputs.callbacks.history import History


class FigurePublisher(pl.Callback):
    """``history``: the callback whose validation entries the training curves draw."""

    def __init__(self, history: History) -> None:
        self.history = history

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                if isinstance(logger, WeightsLogger):
                    logger.log_weights(segmentation_module(pl_module).model, trainer.global_step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._publish(trainer, segmentation_module(pl_module), "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._publish(trainer, segmentation_module(pl_module), "test")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The training curves, once, over the whole run (a resumed one included)."""
        if self.history.entries and trainer.is_global_zero and shows_pictures(trainer, "val", "training curves"):
            publish_figure(
                trainer,
                "val",
                "training curves",
                curves_figure(self.history.entries, segmentation_module(pl_module).train_losses),
            )

    def _publish(self, trainer: pl.Trainer, module: SegmentationModule, split: str) -> None:
        if not trainer.is_global_zero or not shows_pictures(trainer, split):
            return
        evaluation, labels, colors = module.evaluation[split], module.class_labels, module.class_colors
        publish_figure(
            trainer,
            split,
            "confusion matrix",
            confusion_figure(evaluation.confusion, labels, split, evaluation.epoch, evaluation.miou),
        )
        publish_figure(
            trainer,
            split,
            "IoU per class",
            iou_figure(evaluation.metrics, labels, colors, split, evaluation.epoch),
        )
        if evaluation.samples:
            publish_figure(
                trainer,
                split,
                "samples",
                samples_figure(evaluation.samples, labels, colors, split, evaluation.epoch),
            )
        for logger in trainer.loggers:
            if isinstance(logger, TextLogger):  # the numbers behind the confusion matrix's colours
                logger.log_text(
                    split, "confusion matrix", confusion_table(evaluation.confusion, labels), trainer.global_step
                )
