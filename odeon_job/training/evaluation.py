"""The result of evaluating a split, and its history entry: what the module hands to callbacks and loggers, and
what convert-history rebuilds from ODEON's files (so it lives apart from the LightningModule, and from Lightning)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from odeon_job.training.metrics import Scores, row_normalised
from odeon_job.training.plots import ShownTile


@dataclass
class Evaluation:
    """What one validation or test of a split gives: the loss of its scored pixels, its confusion matrix and every
    figure derived from it, the pixels left out, the tiles shown in pictures."""

    loss: float
    confusion: torch.Tensor  # pixel counts, rows = truth, columns = prediction (CPU, int64)
    metrics: Scores
    #: Pixels left out of the loss and the matrix (no selected class, or the mask's nodata).
    ignored: int = 0
    #: The first tiles of the run as the network saw them, for pictures (this process's).
    samples: list[ShownTile] = field(default_factory=list)
    #: The epoch a validation closed, counted from 1 as the console does (None for a test), for titles.
    epoch: int | None = None

    @property
    def miou(self) -> float:
        value = self.metrics["Average/IoU"]
        return value if value is not None else 0.0

    def entry(self, learning_rate: float | None = None) -> dict[str, Any]:
        """The history entry: every figure, both confusion matrices, the loss (and learning rate)."""
        entry: dict[str, Any] = {
            **self.metrics,
            "cm_micro": self.confusion.tolist(),
            "cm_macro": row_normalised(self.confusion),
            "loss": self.loss,
            "ignored pixels": self.ignored,
        }
        if learning_rate is not None:
            entry["learning rate"] = learning_rate
        return entry


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None: JSON has no such numbers (Python's ``NaN`` is not JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
