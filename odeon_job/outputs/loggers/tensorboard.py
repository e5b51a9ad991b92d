"""TensorBoard as a Lightning logger: one run per split under ``tensorboard/`` (train, val, test), so that the
curves of a figure overlay. Steps are the training's global step.

- train: the epoch's mean loss; with ``log_learning_rate`` the learning rate and momentum; the model
  graph (once); every epoch, the distribution and histogram of each convolution's and layer's weights;
- val: every figure of the history (``Overall/IoU``, ``batiment/F1-Score``, ...) and the loss, and the
  pictures of :mod:`odeon_job.training.plots` (confusion matrix with a table of its pixel counts, IoU per class,
  sample tiles; at the end the training curves);
- test: the same figures and pictures, for the tested checkpoint.

Only the first process writes. TensorBoard's writer appends to its event file, which object stores cannot
do: for a remote run folder, events are written to a local staging folder (``storage.staging_folder``), and
at every save after new figures (each validation, each training epoch) the event file is closed and uploaded
whole, then a new one is started. TensorBoard reads all the event files of a folder as one run.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from argparse import Namespace
from typing import Any

import numpy as np
import torch
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.tensorboard import SummaryWriter

from odeon_job import storage
from odeon_job.config import SPLITS
from odeon_job.outputs.loggers import output_metrics

log = logging.getLogger("odeon")

#: Shown in the train run only with ``output_setup.log_learning_rate``.
OPTIMIZER_STATE = ("learning rate", "momentum")


class TensorBoardOutput(Logger):
    def __init__(self, folder: str, log_learning_rate: bool) -> None:
        super().__init__()
        self.folder, self.log_learning_rate = folder, log_learning_rate
        self.writers: dict[str, SummaryWriter] = {}
        self.staging: str | None = None
        self.uploads = 0
        self.unsaved: set[str] = set()
        self.graph_logged = False

    @property
    def name(self) -> str:
        return "tensorboard"

    @property
    def version(self) -> str:
        return ""

    @property
    def experiment(self) -> TensorBoardOutput:
        return self

    def writer(self, split: str) -> SummaryWriter:
        if split not in self.writers:
            if self.staging is None and not storage.is_local(self.folder):
                self.staging = storage.staging_folder("tensorboard")
            self.writers[split] = SummaryWriter(os.path.join(self.staging or self.folder, split))
        self.unsaved.add(split)
        return self.writers[split]

    # --- what Lightning hands every logger ---------------------------------------------------------------

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """The configuration is the run folder's ``config.json`` (and MLflow's parameters)."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for name, value in output_metrics(metrics).items():
            split, _, tag = name.partition("/")
            if split not in SPLITS or not tag or (tag in OPTIMIZER_STATE and not self.log_learning_rate):
                continue
            self.writer(split).add_scalar(tag, value, step)

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """The network's graph, traced once on a blank tile."""
        if self.graph_logged or not hasattr(model, "model"):
            return
        self.graph_logged = True
        example = torch.zeros(1, model.in_channels, 64, 64, device=model.device)
        try:
            with warnings.catch_warnings():  # torch.jit.trace's deprecation and tracer notes: not the user's
                warnings.simplefilter("ignore")
                self.writer("train").add_graph(model.model, example)
        except Exception as error:  # tracing is best effort: a graph is not worth failing a training for
            log.warning("TensorBoard: the model graph could not be traced (%s)", str(error).splitlines()[0])

    @rank_zero_only
    def save(self) -> None:
        """Make what the writers hold visible in the run folder (uploaded whole when it is remote)."""
        for split in [s for s in SPLITS if s in self.unsaved and s in self.writers]:
            if self.staging is None:
                self.writers[split].flush()
            else:
                self.writers.pop(split).close()
                self._upload(split)
            self.unsaved.discard(split)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Flush and close every writer; for a remote run folder, upload what is left and remove the staging
        folder. (Called after the training and again after the test: writers reopen when the test logs.)"""
        self.save()
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None

    # --- what the module and the callbacks hand the loggers that show them -------------------------------

    @rank_zero_only
    def log_figure(self, split: str, name: str, image: np.ndarray, step: int) -> None:
        self.writer(split).add_image(name, image, step, dataformats="HWC")

    @rank_zero_only
    def log_text(self, split: str, name: str, text: str, step: int) -> None:
        self.writer(split).add_text(name, text, step)

    @rank_zero_only
    def log_weights(self, model: torch.nn.Module, step: int) -> None:
        """The distribution of every convolution's and linear layer's weights (not biases or norms)."""
        writer = self.writer("train")
        for name, parameter in model.named_parameters():
            if parameter.dim() > 1:
                values = parameter.detach().float().cpu()
                if bool(torch.isfinite(values).all()):  # TensorBoard's histogram refuses NaN
                    writer.add_histogram(name, values, step)

    def _upload(self, split: str) -> None:
        """Upload the closed event files of ``split``, each whole, then forget them locally."""
        assert self.staging is not None
        local = os.path.join(self.staging, split)
        for name in sorted(os.listdir(local)) if os.path.isdir(local) else []:
            path = os.path.join(local, name)
            storage.put_file(path, storage.join(self.folder, split, self._ordered_name(name)))
            os.remove(path)

    def _ordered_name(self, name: str) -> str:
        """``events.out.tfevents.<seconds>.<host>.<pid>.<n>`` with a zero-padded sequence number after the
        seconds: TensorBoard reads a folder's files in name order and drops the steps it sees go back."""
        self.uploads += 1
        prefix = "events.out.tfevents."
        stamp, _, rest = name.removeprefix(prefix).partition(".")
        return f"{prefix}{stamp}.{self.uploads:06d}.{rest}"
