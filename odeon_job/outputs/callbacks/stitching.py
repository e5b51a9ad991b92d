"""Predictions of scenes: the test windows of each CSV row stitched into one georeferenced GeoTIFF.

Overlapping windows are averaged on their probabilities, then written in ``prediction_output_type``
(:mod:`odeon_job.outputs.prediction_files`), the image's nodata marked. The grid's windows come row by row, so
rows above the current window are final: they are written to a local tiled GeoTIFF as soon as they are, and memory holds
one band of ``patch_size`` rows across the scene, never the scene. The finished file is turned into a
Cloud-Optimized GeoTIFF and put where the run's outputs go (local or object storage) in one piece.

Under DDP each process predicts whole scenes (``GroupShardSampler``), so one process writes each file. The same
callback stitches the test phase's scenes and those of ``odeon predict`` (the batches of ``Trainer.predict``).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import pytorch_lightning as pl
import rasterio
import rasterio.shutil
import torch
from rasterio.enums import MaskFlags

from odeon_job import storage
from odeon_job.data.grid import Box
from odeon_job.data.raster import check_written, failures_reported, grid_of, open_raster
from odeon_job.data.samples import Sample
from odeon_job.data.windows import GridWindows, WindowPlan
from odeon_job.outputs.callbacks.predictions import ErrorReport, batch_truth, batch_validity, legend_of
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

log = logging.getLogger("odeon")


class ErrorBand:
    """A test scene's error map being stitched beside its prediction: each window's own prediction on the pixels it
    owns (those the metrics score, once each), against the truth; written as its rows are final, and counted."""

    def __init__(self, path: str, width: int, band_rows: int, legend: Legend, profile: dict[str, Any]) -> None:
        self.n_classes = len(legend.labels)
        self.truth = np.full((band_rows, width), -1, np.int64)
        self.prediction = np.zeros((band_rows, width), np.int64)
        self.confusion = np.zeros((self.n_classes, self.n_classes), np.int64)
        dtype, nodata = error_type(self.n_classes)
        self.path = path
        self.file = rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=width,
            height=profile.pop("height"),
            count=1,
            dtype=dtype,
            nodata=nodata,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            BIGTIFF="IF_SAFER",
            **profile,
        )
        describe_errors(self.file, legend)

    def add(
        self,
        rows: slice,
        columns: slice,
        owned: tuple[int, int, int, int],
        probabilities: np.ndarray,
        truth: np.ndarray,
    ) -> None:
        """The window's pixels it owns (``owned``: top, left, bottom, right in the window) into the band at
        (``rows``, ``columns``)."""
        top, left, bottom, right = owned
        band_rows = slice(rows.start + top, rows.start + bottom)
        band_columns = slice(columns.start + left, columns.start + right)
        self.truth[band_rows, band_columns] = truth[top:bottom, left:right]
        self.prediction[band_rows, band_columns] = predicted_class(probabilities[:, top:bottom, left:right])

    def write(self, window: rasterio.windows.Window, rows: int) -> None:
        truth, prediction = self.truth[:rows], self.prediction[:rows]
        self.file.write(error_codes(truth, prediction, self.n_classes)[None], window=window)
        self.confusion += row_confusion(truth, prediction, self.n_classes)

    def shift(self, rows: int) -> None:
        for array, empty in ((self.truth, -1), (self.prediction, 0)):
            array[: len(array) - rows] = array[rows:].copy()
            array[len(array) - rows :] = empty

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()


class Mosaic:
    """One row's region being stitched: a band of rows of summed probabilities and window counts (and, for a test
    with masks, its :class:`ErrorBand`)."""

    def __init__(
        self,
        path: str,
        region: Box,
        band_rows: int,
        output_type: str,
        legend: Legend,
        profile: dict[str, Any],
        masked: bool,
        errors_path: str | None = None,
    ) -> None:
        self.top_row, self.left, self.height, self.width = region
        self.output_type, self.band_rows = output_type, band_rows
        classes = len(legend.labels)
        self.sums = np.zeros((classes, band_rows, self.width), np.float32)
        self.counts = np.zeros((band_rows, self.width), np.float32)
        self.valid = np.zeros((band_rows, self.width), bool)  # the image has data (in any window reading it)
        self.done = 0  # rows of the region written so far (the band starts there)
        #: An internal mask band is written (a masked output type, of an image that has nodata).
        self.masked = masked and mask_of(output_type, np.ones((1, 1), bool)) is not None
        self.path = path
        self.file = rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=self.width,
            height=self.height,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            BIGTIFF="IF_SAFER",
            **profile,
            **file_options(output_type, classes),
        )
        describe(self.file, output_type, legend)
        self.errors = (
            ErrorBand(errors_path, self.width, band_rows, legend, {**profile, "height": self.height})
            if errors_path is not None
            else None
        )

    def add(
        self,
        window: Box,
        probabilities: np.ndarray,
        valid: np.ndarray | None = None,
        truth: np.ndarray | None = None,
        owned: tuple[int, int, int, int] | None = None,
    ) -> None:
        """Add a window's (classes, h, w) probabilities (and (h, w) validity of the image, None: all valid; truth,
        scored where the window ``owned`` the pixels); windows come row by row (their tops never go back)."""
        row, col, height, width = window
        row, col = row - self.top_row, col - self.left
        if row < self.done:
            raise RuntimeError(f"a window at row {row} came after rows up to {self.done} were written")
        if row > self.done:
            self._write_rows(row)
        rows, columns = slice(row - self.done, row - self.done + height), slice(col, col + width)
        self.sums[:, rows, columns] += probabilities
        self.counts[rows, columns] += 1
        self.valid[rows, columns] |= True if valid is None else valid
        if self.errors is not None and truth is not None:
            self.errors.add(rows, columns, owned or (0, 0, height, width), probabilities, truth)

    def _write_rows(self, until: int) -> None:
        """Write the band's rows up to region row ``until`` (final: no later window reaches them), then shift."""
        rows = until - self.done
        counts = self.counts[:rows]
        if (counts == 0).any():
            raise RuntimeError(f"rows {self.done}..{until} of a stitched scene were not all predicted")
        valid = self.valid[:rows]
        window = rasterio.windows.Window(0, self.done, self.width, rows)
        self.file.write(encode(self.sums[:, :rows] / counts, self.output_type, valid), window=window)
        if self.masked:
            self.file.write_mask(mask_of(self.output_type, valid), window=window)
        if self.errors is not None:
            self.errors.write(window, rows)
            self.errors.shift(rows)
        for array in (self.sums, self.counts, self.valid):
            array[..., : self.band_rows - rows, :] = array[..., rows:, :].copy()
            array[..., self.band_rows - rows :, :] = 0
        self.done = until

    def finish(self) -> None:
        while self.done < self.height:  # the band may end short of the last rows of a tall last window
            self._write_rows(min(self.height, self.done + self.band_rows))
        with failures_reported(self.path):  # the last blocks are written now
            self.file.close()
        if self.errors is not None:
            with failures_reported(self.errors.path):
                self.errors.file.close()

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
        if self.errors is not None:
            self.errors.close()


class WindowedScenes(Protocol):
    """What the stitcher reads of a dataset of scenes in windows: the test split's, or ``odeon predict``'s."""

    @property
    def samples(self) -> Sequence[Sample]: ...

    @property
    def resolution(self) -> tuple[float, float] | None: ...

    @property
    def windows(self) -> WindowPlan: ...

    @property
    def image_bands(self) -> tuple[int, ...]: ...


def publish_cog(path: str, target: str, sidecar_files: dict[str, bytes], options: dict[str, Any] | None = None) -> None:
    """The local GeoTIFF ``path`` as a Cloud-Optimized GeoTIFF at ``target`` (local or object storage), its sidecar
    files first (a map that exists is whole, with its style); the local files are removed."""
    cog = os.path.join(os.path.dirname(path), "cog.tif")
    with storage.writing_staged(cog), failures_reported(cog):
        rasterio.shutil.copy(path, cog, driver="COG", compress="DEFLATE", **(options or {}))
        check_written(cog)
    for suffix, content in sidecar_files.items():
        storage.write_bytes(sidecar_name(target, suffix), content)
    storage.put_file(cog, target)
    for local in (path, cog):
        os.unlink(local)


class SceneStitcher(pl.Callback):
    """Stitches the windows of each row of ``dataset`` (``names``: its output files, by row) as the test or the
    prediction batches pass; ``on_scene``: called with each scene's row once its file is out."""

    def __init__(
        self,
        folder: str,
        output_type: str,
        dataset: WindowedScenes,
        names: Sequence[str] | None = None,
        on_scene: Callable[[int], None] | None = None,
        report: ErrorReport | None = None,
    ) -> None:
        if not isinstance(dataset.windows, GridWindows):
            raise TypeError("scenes are stitched from a grid of windows")
        self.folder, self.output_type, self.dataset, self.plan = folder, output_type, dataset, dataset.windows
        self.names = names if names is not None else prediction_names([sample.image for sample in dataset.samples])
        self.on_scene, self.report = on_scene, report
        self.row: int | None = None
        self.added = 0  # windows of the row's scene added so far
        self.mosaic: Mosaic | None = None
        self.staging: str | None = None
        self.legend: Legend | None = None

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._add_batch(pl_module, outputs["logits"], batch)

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._add_batch(pl_module, outputs, batch)

    def _add_batch(self, pl_module: pl.LightningModule, logits: torch.Tensor, batch: Any) -> None:
        probabilities = segmentation_module(pl_module).probabilities(logits).float().cpu().numpy()
        self.legend = legend_of(pl_module)
        with storage.writing_staged(self._staged()):
            items = zip(
                batch["index"].tolist(),
                batch["shape"].tolist(),
                probabilities,
                batch_validity(batch, len(probabilities)),
                batch_truth(batch, len(probabilities)),
                strict=True,
            )
            for index, (height, width), window_probabilities, valid, truth in items:
                read = self.plan(index)
                if read.row != self.row:
                    self._finish()
                    self._start(read.row)
                assert self.mosaic is not None and read.window is not None
                self.mosaic.add(
                    read.window,
                    window_probabilities[:, :height, :width],
                    valid[:height, :width] if valid is not None else None,
                    truth[:height, :width] if truth is not None else None,
                    read.owned,
                )
                self.added += 1

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with storage.writing_staged(self._staged()):
            self._finish()

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.on_test_epoch_end(trainer, pl_module)

    def _staged(self) -> str:
        """The file being stitched (for messages)."""
        return self.mosaic.path if self.mosaic is not None else self.staging or "the staging folder"

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """A failed or stopped run leaves no partial scene behind (nothing was put yet) and no local files."""
        if self.mosaic is not None:
            self.mosaic.close()
        self._clean()

    def _start(self, row: int) -> None:
        sample, resolution = self.dataset.samples[row], self.dataset.resolution
        with open_raster(sample.image, sample.origin) as src:
            crs, grid = src.crs, grid_of(src, resolution)
            masked = not all(MaskFlags.all_valid in src.mask_flag_enums[band - 1] for band in self.dataset.image_bands)
        top, left, height, width = (int(v) for v in self.plan.regions[row])
        region: Box = (top, left, height, width)
        self.staging = self.staging or storage.staging_folder("prediction")
        self.row, self.added = row, 0
        assert self.legend is not None
        self.mosaic = Mosaic(
            os.path.join(self.staging, "stitched.tif"),
            region,
            self.plan.patch,
            self.output_type,
            self.legend,
            {"crs": crs, "transform": grid.window_transform(region), "compress": "deflate", "predictor": 1},
            masked,
            os.path.join(self.staging, "errors.tif") if self.report is not None else None,
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
            if self.mosaic.errors is not None:
                os.unlink(self.mosaic.errors.path)
            self.mosaic, self.row = None, None
            return
        self.mosaic.finish()
        assert self.staging is not None and self.legend is not None
        options = {"nbits": 1} if self.output_type == "bit" else {}
        target = storage.join(self.folder, self.names[self.row])
        publish_cog(self.mosaic.path, target, sidecars(self.output_type, self.legend), options)
        if self.mosaic.errors is not None and self.report is not None:
            errors_target = storage.join(self.report.folder, self.names[self.row])
            publish_cog(self.mosaic.errors.path, errors_target, error_sidecars(self.legend))
            self.report.scores.add(self.row, self.mosaic.errors.confusion)
        if self.on_scene is not None:
            self.on_scene(self.row)
        self.mosaic, self.row = None, None

    def _clean(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._clean()
