"""``scenes.csv``: the test's figures row by row (pixels scored and right, accuracy, IoU of each class), so that a
photo-interpreter sees which tiles or scenes the model fails on before opening their error maps.

The prediction writers add each row's confusion matrix as they write its maps (of the pixels the metrics score:
the whole split's matrix is the sum of the rows'); under DDP each process holds its own rows, gathered at the end.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
import torch.distributed as dist

from odeon_job import storage
from odeon_job.data.samples import Sample
from odeon_job.redaction import redact


class RowScores(pl.Callback):
    """Collects ``row → confusion`` and writes ``url`` when the test ends (first process)."""

    def __init__(self, url: str, samples: Sequence[Sample], names: Sequence[str], labels: Sequence[str]) -> None:
        self.url, self.samples, self.names, self.labels = url, samples, names, labels
        self.confusions: dict[int, np.ndarray] = {}

    def add(self, row: int, confusion: np.ndarray) -> None:
        self.confusions[row] = self.confusions.get(row, 0) + confusion

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        confusions = self.confusions
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[dict[int, np.ndarray] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, confusions)
            confusions = {}
            for part in gathered:
                for row, confusion in (part or {}).items():
                    confusions[row] = confusions.get(row, 0) + confusion
        if trainer.is_global_zero and confusions:
            storage.write_text(self.url, self.table(confusions))

    def table(self, confusions: dict[int, np.ndarray]) -> str:
        """One line per row written, in the CSV's order."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            [
                "csv row",
                "image",
                "map",
                "scored pixels",
                "right pixels",
                "accuracy",
                "mIoU",
                *(f"{label} IoU" for label in self.labels),
            ]
        )
        for row in sorted(confusions):
            confusion = confusions[row].astype(np.float64)
            scored, right = confusion.sum(), np.trace(confusion)
            union = confusion.sum(axis=0) + confusion.sum(axis=1) - np.diag(confusion)
            ious = [np.diag(confusion)[c] / union[c] if union[c] else None for c in range(len(self.labels))]
            present = [iou for iou in ious if iou is not None]
            writer.writerow(
                [
                    redact(self.samples[row].origin),  # (a presigned URL's signature never reaches a file)
                    redact(self.samples[row].image),
                    self.names[row],
                    int(scored),
                    int(right),
                    _figure(right / scored if scored else None),
                    _figure(float(np.mean(present)) if present else None),
                    *(_figure(iou) for iou in ious),
                ]
            )
        return out.getvalue()


def _figure(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
