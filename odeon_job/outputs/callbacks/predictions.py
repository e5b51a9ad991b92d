"""Predictions of the test tiles, written during the test run as GeoTIFFs beside the other outputs.

Each file has the input tile's name, CRS and transform (scaled when the split is read at another
``resolution``) and one band per class:

- ``float32``: the probabilities (softmax for ce and focal, a sigmoid per class for bce and combo);
- ``uint8``: the same scaled to 0-255;
- ``bit``: the one-hot class (the first of highest probability, as the metrics count it), one 1-bit band per
  class (GeoTIFF ``NBITS=1``).

Under DDP each process writes the predictions of its own share of the test tiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
from rasterio.io import MemoryFile

from odeon_job import storage
from odeon_job.data.dataset import SegmentationDataset
from odeon_job.data.raster import grid_of, open_raster
from odeon_job.outputs.run_folder import prediction_names
from odeon_job.training.segmentation_module import segmentation_module


def predicted_class(probabilities: np.ndarray) -> np.ndarray:
    """(classes, H, W) probabilities → (H, W) classes: the first class of highest probability (the metrics' rule,
    ``SegmentationModule.predicted_classes``)."""
    return probabilities.argmax(axis=0)


def encode(probabilities: np.ndarray, output_type: str) -> tuple[np.ndarray, dict[str, Any]]:
    """(classes, H, W) probabilities → the array to write and its extra GeoTIFF options."""
    if output_type == "float32":
        return probabilities.astype(np.float32), {}
    if output_type == "uint8":
        return np.round(probabilities * 255).astype(np.uint8), {}
    classes = predicted_class(probabilities)
    onehot = (classes[None] == np.arange(probabilities.shape[0])[:, None, None]).astype(np.uint8)
    return onehot, {"nbits": 1}


class PredictionWriter(pl.Callback):
    def __init__(self, folder: str, output_type: str, dataset: SegmentationDataset) -> None:
        self.folder, self.output_type, self.dataset = folder, output_type, dataset
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
        for index, (height, width), sample_probabilities in zip(
            batch["index"].tolist(), batch["shape"].tolist(), probabilities, strict=True
        ):
            self.write(index, sample_probabilities[:, :height, :width])  # without a batch's padding

    def write(self, index: int, probabilities: np.ndarray) -> None:
        sample = self.dataset.samples[index]
        with open_raster(sample.image, sample.origin) as src:
            crs, grid = src.crs, grid_of(src, self.dataset.resolution)
        region = grid.region(sample.window)  # the part of the scene the CSV row names, as it was read
        data, options = encode(probabilities, self.output_type)
        rows, columns = data.shape[-2:]
        assert (rows, columns) == region[2:], "a tile's prediction has the size it was read at"
        profile = {
            "driver": "GTiff",
            "width": columns,
            "height": rows,
            "count": data.shape[0],
            "dtype": data.dtype,
            "crs": crs,
            "transform": grid.window_transform(region),
            "compress": "deflate",
            **options,
        }
        with MemoryFile() as memory:
            with memory.open(**profile) as dst:
                dst.write(data)
            payload = memory.read()
        storage.write_bytes(storage.join(self.folder, self.names[index]), payload)
