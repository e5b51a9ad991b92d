"""TensorBoard: one run per split under ``tensorboard/`` (train, val, test), so that the curves of a
figure overlay. Steps are the training's global step.

- train: the epoch's mean loss; with ``log_learning_rate`` the learning rate and momentum; the model
  graph (once); every epoch, the distribution and histogram of each convolution's and layer's weights;
- val: every figure of the history (``Overall/IoU``, ``batiment/F1-Score``, ...) and the loss; the
  pictures of :mod:`odeon_job.figures`: the confusion matrix (and a table of its pixel counts), the IoU
  per class, the first validation tiles as input | truth | prediction; at the end, the training curves;
- test: the same figures and pictures, for the tested checkpoint.

Only rank 0 writes. TensorBoard's writer appends to its event file, which object stores cannot do:
for a remote run folder, events are written to a local staging folder (``storage.staging_folder``),
and at every flush (each validation, each training epoch) the event file is closed and uploaded
whole, then a new one is started. TensorBoard reads all the event files of a folder as one run.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings

import pytorch_lightning as pl
import torch
from torch.utils.tensorboard import SummaryWriter

from odeon_job import storage
from odeon_job.callbacks.history import History
from odeon_job.figures import confusion_figure, confusion_table, curves_figure, iou_figure, samples_figure
from odeon_job.module import Evaluation

log = logging.getLogger("odeon")


class TensorBoard(pl.Callback):
    def __init__(self, folder: str, log_learning_rate: bool) -> None:
        self.folder, self.log_learning_rate = folder, log_learning_rate
        self.writers: dict[str, SummaryWriter] = {}
        self.staging = None if storage.is_local(folder) else storage.staging_folder("tensorboard")
        self.uploads = 0

    def writer(self, split: str) -> SummaryWriter:
        if split not in self.writers:
            self.writers[split] = SummaryWriter(os.path.join(self.staging or self.folder, split))
        return self.writers[split]

    def flush(self, split: str) -> None:
        """Make what ``split``'s writer holds visible in the run folder."""
        if split not in self.writers:
            return
        if self.staging is None:
            self.writers[split].flush()
            return
        self.writers.pop(split).close()
        self._upload(split)

    def _upload(self, split: str) -> None:
        """Upload the closed event files of ``split``, each whole, then forget them locally."""
        assert self.staging is not None
        local = os.path.join(self.staging, split)
        for name in sorted(os.listdir(local)) if os.path.isdir(local) else []:
            path = os.path.join(local, name)
            with open(path, "rb") as stream:
                storage.write_bytes(storage.join(self.folder, split, self._ordered_name(name)), stream.read())
            os.remove(path)

    def _ordered_name(self, name: str) -> str:
        """``events.out.tfevents.<seconds>.<host>.<pid>.<n>`` with a zero-padded sequence number after the
        seconds: TensorBoard reads a folder's files in name order and drops the steps it sees go back."""
        self.uploads += 1
        prefix = "events.out.tfevents."
        stamp, _, rest = name.removeprefix(prefix).partition(".")
        return f"{prefix}{stamp}.{self.uploads:06d}.{rest}"

    # --- train -----------------------------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        example = torch.zeros(1, pl_module.in_channels, 64, 64, device=pl_module.device)
        try:
            with warnings.catch_warnings():  # torch.jit.trace's deprecation and tracer notes: not the user's
                warnings.simplefilter("ignore")
                self.writer("train").add_graph(pl_module.model, example)
        except Exception as error:  # tracing is best effort: a graph is not worth failing a training for
            log.warning("TensorBoard: the model graph could not be traced (%s)", str(error).splitlines()[0])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        writer, step = self.writer("train"), trainer.global_step
        if "train_loss_epoch" in trainer.callback_metrics:
            writer.add_scalar("loss", float(trainer.callback_metrics["train_loss_epoch"]), step)
        if self.log_learning_rate and pl_module.lr_used is not None:  # what the epoch trained with
            writer.add_scalar("learning rate", pl_module.lr_used, step)
            if pl_module.momentum_used is not None:
                writer.add_scalar("momentum", pl_module.momentum_used, step)
        for name, parameter in pl_module.model.named_parameters():
            if parameter.dim() > 1:  # convolution and linear weights, not biases or norms
                values = parameter.detach().float().cpu()
                if bool(torch.isfinite(values).all()):  # TensorBoard's histogram refuses NaN
                    writer.add_histogram(name, values, step)
        self.flush("train")

    # --- val / test --------------------------------------------------------------------------------------

    def _evaluation(self, split: str, evaluation: Evaluation, labels: tuple[str, ...], step: int) -> None:
        writer = self.writer(split)
        writer.add_scalar("loss", evaluation.loss, step)
        for name, value in evaluation.metrics.items():
            if value is not None:
                writer.add_scalar(name, value, step)
        writer.add_image("confusion matrix", confusion_figure(evaluation.confusion, labels, split, evaluation.epoch,
                                                              evaluation.miou), step, dataformats="HWC")
        writer.add_text("confusion matrix", confusion_table(evaluation.confusion, labels), step)
        writer.add_image("IoU per class", iou_figure(evaluation.metrics, labels, split, evaluation.epoch), step,
                         dataformats="HWC")
        if evaluation.samples:
            writer.add_image("samples", samples_figure(evaluation.samples, labels, split, evaluation.epoch), step,
                             dataformats="HWC")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self._evaluation("val", pl_module.evaluation["val"], pl_module.class_labels, trainer.global_step)
        self.flush("val")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The training curves, once, over the whole run."""
        history = next((c for c in trainer.callbacks if isinstance(c, History)), None)  # type: ignore[attr-defined]
        if trainer.is_global_zero and history is not None and history.entries:
            self.writer("val").add_image("training curves", curves_figure(history.entries, pl_module.train_losses),
                                         trainer.global_step, dataformats="HWC")
            self.flush("val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._evaluation("test", pl_module.evaluation["test"], pl_module.class_labels, trainer.global_step)
            self.flush("test")

    def close(self) -> None:
        """Flush every writer; for a remote run folder, upload what is left and remove the staging folder."""
        for split in list(self.writers):
            if self.staging is None:
                self.writers.pop(split).close()
            else:
                self.flush(split)
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
