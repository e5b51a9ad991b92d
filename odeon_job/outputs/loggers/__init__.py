"""The run's outputs as Lightning loggers: TensorBoard, MLflow (and Lightning's own Weights & Biases logger).

Metrics reach every logger through Lightning (the module's ``self.log``); each picture is drawn once and
handed to every logger by :func:`publish_figure`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import pytorch_lightning as pl
    import torch


@runtime_checkable
class FigureLogger(Protocol):
    """A logger that shows pictures (TensorBoard, MLflow): each is drawn once and handed to it."""

    def log_figure(self, split: str, name: str, image: np.ndarray, step: int) -> None: ...


@runtime_checkable
class TextLogger(Protocol):
    """A logger that shows text beside a picture (TensorBoard: the numbers of the confusion matrix)."""

    def log_text(self, split: str, name: str, text: str, step: int) -> None: ...


@runtime_checkable
class WeightsLogger(Protocol):
    """A logger that shows the weights' histograms (TensorBoard)."""

    def log_weights(self, model: torch.nn.Module, step: int) -> None: ...


#: Lightning's names of what the module logs → the names the outputs show (None: not shown: the monitors
#: and per-step values Lightning logs for the progress bar and checkpoints, which the split's figures repeat).
RENAMED: dict[str, str | None] = {
    "train_loss_epoch": "train/loss",
    "train_loss_step": None,
    "train_loss": None,
    "val_loss": None,
    "val_miou": None,
    "test_loss": None,
    "test_miou": None,
}


def output_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics Lightning hands a logger, under the names the run's outputs show (``train/loss``,
    ``val/Average/IoU``, ``test/loss``, ``epoch``...)."""
    shown: dict[str, float] = {}
    for name, value in metrics.items():
        shown_as = RENAMED.get(name, name)
        if shown_as is not None:
            shown[shown_as] = float(value)
    return shown


#: A figure's file name (MLflow artifacts, the run folder's ``figures/``): ``confusion_matrix_val.png``...
FIGURE_FILES = {"confusion matrix": "confusion_matrix", "IoU per class": "iou", "samples": "samples"}


def figure_file(split: str, name: str) -> str:
    """The PNG file of the figure ``name`` of ``split`` (``training curves``: one for the run)."""
    file = FIGURE_FILES.get(name, name.replace(" ", "_"))
    return f"{file}_{split}.png" if name in FIGURE_FILES else f"{file}.png"


def _shows(logger: object, split: str, name: str | None) -> bool:
    """Whether ``logger`` shows the picture ``name`` of ``split`` (None: any of them); a logger may take some only
    (its ``shows_figure``)."""
    from pytorch_lightning.loggers import WandbLogger

    if not isinstance(logger, (FigureLogger, WandbLogger)):
        return False
    shows_figure = getattr(logger, "shows_figure", None)
    return shows_figure is None or bool(shows_figure(split, name))


def shows_pictures(trainer: pl.Trainer, split: str, name: str | None = None) -> bool:
    """Whether a logger of ``trainer`` shows the picture ``name`` of ``split`` (None: any picture of ``split``), so
    that none is drawn for nothing."""
    return any(_shows(logger, split, name) for logger in trainer.loggers)


def publish_figure(trainer: pl.Trainer, split: str, name: str, image: np.ndarray) -> None:
    """Hand one picture to every logger of ``trainer`` that shows pictures (first process only)."""
    from pytorch_lightning.loggers import WandbLogger

    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if not _shows(logger, split, name):
            continue
        if isinstance(logger, FigureLogger):
            logger.log_figure(split, name, image, trainer.global_step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=f"{split}/{name}", images=[image], step=trainer.global_step)
