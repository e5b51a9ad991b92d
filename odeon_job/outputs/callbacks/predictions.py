"""Predictions of the test tiles, written during the test run as GeoTIFFs beside the other outputs.

Each file has the input tile's name, CRS and transform (scaled when the split is read at another ``resolution``)
and holds ``prediction_output_type`` (:mod:`odeon_job.outputs.prediction_files`), its sidecar files first: a file
that exists is whole, with its style.

Under DDP each process writes the predictions of its own share of the test tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
from rasterio.io import MemoryFile

from odeon_job import storage
from odeon_job.data.dataset import SegmentationDataset
from odeon_job.data.raster import grid_of, open_raster
from odeon_job.outputs.callbacks.row_scores import RowScores
from odeon_job.outputs.prediction_files import (
    Legend,
    describe,
    describe_errors,
    encode,
    error_codes,
    error_sidecars,
    error_type,
    file_options,
    mask_of,
    predicted_class,
    row_confusion,
    sidecar_name,
    sidecars,
)
from odeon_job.outputs.run_folder import prediction_names
from odeon_job.training.segmentation_module import segmentation_module


def legend_of(module: pl.LightningModule) -> Legend:
    """The classes' names and colours, as the model holds them."""
    module = segmentation_module(module)
    return Legend(module.class_labels, module.class_colors)


def batch_validity(batch: Any, count: int) -> list[np.ndarray | None]:
    """Each item's (H, W) validity of the image (None where the batch has none)."""
    if "valid" not in batch:
        return [None] * count
    return list(batch["valid"].cpu().numpy())


def batch_truth(batch: Any, count: int) -> list[np.ndarray | None]:
    """Each item's (H, W) true classes (ignored and unscored pixels outside 0..n-1), None without masks."""
    if "mask" not in batch:
        return [None] * count
    return list(batch["mask"].cpu().numpy())


@dataclass
class ErrorReport:
    """Where a test's error maps go (``errors``, one per row, named as its prediction) and its row scores."""

    folder: str
    scores: RowScores


def write_error_map(url: str, errors: np.ndarray, profile: dict[str, Any], legend: Legend) -> None:
    """One error map (``errors``: (H, W) codes), with its sidecars first, at ``url``."""
    dtype, nodata = error_type(len(legend.labels))
    with MemoryFile() as memory:
        with memory.open(**profile, count=1, dtype=dtype, nodata=nodata) as dst:
            dst.write(errors[None])
            describe_errors(dst, legend)
        payload = memory.read()
    for suffix, content in error_sidecars(legend).items():
        storage.write_bytes(sidecar_name(url, suffix), content)
    storage.write_bytes(url, payload)


class PredictionWriter(pl.Callback):
    """``report``: also each tile's error map and scores (a test with masks)."""

    def __init__(
        self, folder: str, output_type: str, dataset: SegmentationDataset, report: ErrorReport | None = None
    ) -> None:
        self.folder, self.output_type, self.dataset, self.report = folder, output_type, dataset, report
        self.names = prediction_names([sample.image for sample in dataset.samples])

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        probabilities = segmentation_module(pl_module).probabilities(outputs["logits"]).float().cpu().numpy()
        legend = legend_of(pl_module)
        items = zip(
            batch["index"].tolist(),
            batch["shape"].tolist(),
            probabilities,
            batch_validity(batch, len(probabilities)),
            batch_truth(batch, len(probabilities)),
            strict=True,
        )
        for index, (height, width), sample_probabilities, valid, truth in items:  # without a batch's padding
            self.write(
                index,
                sample_probabilities[:, :height, :width],
                valid[:height, :width] if valid is not None else None,
                legend,
                truth[:height, :width] if truth is not None else None,
            )

    def write(
        self,
        index: int,
        probabilities: np.ndarray,
        valid: np.ndarray | None,
        legend: Legend,
        truth: np.ndarray | None = None,
    ) -> None:
        sample = self.dataset.samples[index]
        with open_raster(sample.image, sample.origin) as src:
            crs, grid = src.crs, grid_of(src, self.dataset.resolution)
        region = grid.region(sample.window)  # the part of the scene the CSV row names, as it was read
        data = encode(probabilities, self.output_type, valid)
        rows, columns = data.shape[-2:]
        assert (rows, columns) == region[2:], "a tile's prediction has the size it was read at"
        profile = {
            "driver": "GTiff",
            "width": columns,
            "height": rows,
            "crs": crs,
            "transform": grid.window_transform(region),
            "compress": "deflate",
            **file_options(self.output_type, len(legend.labels)),
        }
        mask = mask_of(self.output_type, valid) if valid is not None and not valid.all() else None
        with MemoryFile() as memory:
            with memory.open(**profile) as dst:
                dst.write(data)
                describe(dst, self.output_type, legend)
                if mask is not None:
                    dst.write_mask(mask)
            payload = memory.read()
        target = storage.join(self.folder, self.names[index])
        for suffix, content in sidecars(self.output_type, legend).items():
            storage.write_bytes(sidecar_name(target, suffix), content)
        storage.write_bytes(target, payload)
        if self.report is not None and truth is not None:
            prediction = predicted_class(probabilities)
            errors = error_codes(truth, prediction, len(legend.labels))
            geo = {key: profile[key] for key in ("driver", "width", "height", "crs", "transform", "compress")}
            write_error_map(storage.join(self.report.folder, self.names[index]), errors, geo, legend)
            self.report.scores.add(index, row_confusion(truth, prediction, len(legend.labels)))
