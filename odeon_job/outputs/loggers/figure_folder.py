"""The run's test pictures and training curves as PNG files in its ``figures/`` folder (named as MLflow's
artifacts): a photo-interpreter opens them without TensorBoard or an MLflow server, and ``odeon evaluate`` leaves
them beside its report."""

from __future__ import annotations

from typing import Any

import numpy as np
from pytorch_lightning.loggers import Logger

from odeon_job import storage
from odeon_job.outputs.loggers import figure_file
from odeon_job.training.plots import png_bytes


class FigureFolder(Logger):
    """Writes each figure it is handed to ``folder`` at once (whole or not at all, as every output): the test's and
    the training curves."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    @property
    def name(self) -> str:
        return "figures"

    @property
    def version(self) -> str:
        return ""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def shows_figure(self, split: str, name: str | None) -> bool:
        """The test's pictures and the training curves (drawn once): a validation's would be redrawn every epoch."""
        return split != "val" or name == "training curves"

    def log_figure(self, split: str, name: str, image: np.ndarray, step: int) -> None:
        storage.write_bytes(storage.join(self.folder, figure_file(split, name)), png_bytes(image))
