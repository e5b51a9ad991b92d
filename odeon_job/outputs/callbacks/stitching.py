"""Predictions of scenes: the test windows of each CSV row stitched into one georeferenced GeoTIFF.

Overlapping windows are averaged on their probabilities, then written in ``prediction_output_type``
(:func:`odeon_job.outputs.callbacks.predictions.encode`). The grid's windows come row by row, so rows above the
current window are final: they are written to a local tiled GeoTIFF as soon as they are, and memory holds
one band of ``patch_size`` rows across the scene, never the scene. The finished file is turned into a
Cloud-Optimized GeoTIFF and put where the run's outputs go (local or object storage) in one piece.

Under DDP each process predicts whole scenes (``GroupShardSampler``), so one process writes each file.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import numpy as np
import pytorch_lightning as pl
import rasterio
import rasterio.shutil

from odeon_job import storage
from odeon_job.data.dataset import SegmentationDataset
from odeon_job.data.grid import Box
from odeon_job.data.raster import check_written, failures_reported, grid_of, open_raster
from odeon_job.data.windows import GridWindows
from odeon_job.outputs.callbacks.predictions import encode
from odeon_job.outputs.run_folder import prediction_names
from odeon_job.training.segmentation_module import segmentation_module

log = logging.getLogger("odeon")


class Mosaic:
    """One row's region being stitched: a band of rows of summed probabilities and window counts."""

    def __init__(
        self, path: str, region: Box, classes: int, band_rows: int, output_type: str, profile: dict[str, Any]
    ) -> None:
        self.top_row, self.left, self.height, self.width = region
        self.output_type, self.band_rows = output_type, band_rows
        self.sums = np.zeros((classes, band_rows, self.width), np.float32)
        self.counts = np.zeros((band_rows, self.width), np.float32)
        self.done = 0  # rows of the region written so far (the band starts there)
        sample, options = encode(np.zeros((classes, 1, 1), np.float32), output_type)  # the type written
        self.path = path
        self.file = rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=self.width,
            height=self.height,
            count=classes,
            dtype=sample.dtype,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            BIGTIFF="IF_SAFER",
            **profile,
            **options,
        )

    def add(self, window: Box, probabilities: np.ndarray) -> None:
        """Add a window's (classes, h, w) probabilities; windows come row by row (their tops never go back)."""
        row, col, height, width = window
        row, col = row - self.top_row, col - self.left
        if row < self.done:
            raise RuntimeError(f"a window at row {row} came after rows up to {self.done} were written")
        if row > self.done:
            self._write_rows(row)
        self.sums[:, row - self.done : row - self.done + height, col : col + width] += probabilities
        self.counts[row - self.done : row - self.done + height, col : col + width] += 1

    def _write_rows(self, until: int) -> None:
        """Write the band's rows up to region row ``until`` (final: no later window reaches them), then shift."""
        rows = until - self.done
        counts = self.counts[:rows]
        if (counts == 0).any():
            raise RuntimeError(f"rows {self.done}..{until} of a stitched scene were not all predicted")
        data, _ = encode(self.sums[:, :rows] / counts, self.output_type)
        self.file.write(data, window=rasterio.windows.Window(0, self.done, self.width, rows))
        self.sums[:, : self.band_rows - rows] = self.sums[:, rows:].copy()
        self.sums[:, self.band_rows - rows :] = 0
        self.counts[: self.band_rows - rows] = self.counts[rows:].copy()
        self.counts[self.band_rows - rows :] = 0
        self.done = until

    def finish(self) -> None:
        while self.done < self.height:  # the band may end short of the last rows of a tall last window
            self._write_rows(min(self.height, self.done + self.band_rows))
        with failures_reported(self.path):  # the last blocks are written now
            self.file.close()

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()


class SceneStitcher(pl.Callback):
    def __init__(self, folder: str, output_type: str, dataset: SegmentationDataset) -> None:
        if not isinstance(dataset.windows, GridWindows):
            raise TypeError("scenes are stitched from a grid of windows")
        self.folder, self.output_type, self.dataset, self.plan = folder, output_type, dataset, dataset.windows
        self.names = prediction_names([sample.image for sample in dataset.samples])
        self.row: int | None = None
        self.added = 0  # windows of the row's scene added so far
        self.mosaic: Mosaic | None = None
        self.staging: str | None = None

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
        with storage.writing_staged(self._staged()):
            items = zip(batch["index"].tolist(), batch["shape"].tolist(), probabilities, strict=True)
            for index, (height, width), window_probabilities in items:
                read = self.plan(index)
                if read.row != self.row:
                    self._finish()
                    self._start(read.row)
                assert self.mosaic is not None and read.window is not None
                self.mosaic.add(read.window, window_probabilities[:, :height, :width])
                self.added += 1

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with storage.writing_staged(self._staged()):
            self._finish()

    def _staged(self) -> str:
        """The file being stitched (for messages)."""
        return self.mosaic.path if self.mosaic is not None else self.staging or "the staging folder"

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """A failed or stopped test leaves no partial scene behind (nothing was put yet) and no local files."""
        if self.mosaic is not None:
            self.mosaic.close()
        self._clean()

    def _start(self, row: int) -> None:
        sample, resolution = self.dataset.samples[row], self.dataset.resolution
        with open_raster(sample.image, sample.origin) as src:
            crs, grid = src.crs, grid_of(src, resolution)
        top, left, height, width = (int(v) for v in self.plan.regions[row])
        region: Box = (top, left, height, width)
        self.staging = self.staging or storage.staging_folder("prediction")
        self.row, self.added = row, 0
        self.mosaic = Mosaic(
            os.path.join(self.staging, "stitched.tif"),
            region,
            self.dataset.spec.n_classes,
            self.plan.patch,
            self.output_type,
            {"crs": crs, "transform": grid.window_transform(region), "compress": "deflate", "predictor": 1},
        )

    def _finish(self) -> None:
        if self.mosaic is None or self.row is None:
            return
        if self.added < len(self.plan.items_of_row(self.row)):  # train_setup.testing: the first batches only
            log.warning(
                "predictions: %s was not written: only %d of its %d windows were predicted (testing runs a "
                "few batches)",
                self.names[self.row],
                self.added,
                len(self.plan.items_of_row(self.row)),
            )
            self.mosaic.close()
            os.unlink(self.mosaic.path)
            self.mosaic, self.row = None, None
            return
        self.mosaic.finish()
        assert self.staging is not None
        cog = os.path.join(self.staging, "cog.tif")
        options = {"nbits": 1} if self.output_type == "bit" else {}
        with storage.writing_staged(cog), failures_reported(cog):
            rasterio.shutil.copy(self.mosaic.path, cog, driver="COG", compress="DEFLATE", **options)
            check_written(cog)
        storage.put_file(cog, storage.join(self.folder, self.names[self.row]))
        for path in (self.mosaic.path, cog):
            os.unlink(path)
        self.mosaic, self.row = None, None

    def _clean(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._clean()
