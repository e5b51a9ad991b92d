"""A map-style dataset of image/mask tiles read with rasterio inside each DataLoader worker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.enums import Resampling
from torch.utils.data import Dataset

from odeon_job.data.grid import Box, SceneGrid
from odeon_job.data.masks import class_indices, ignore_value, mask_nodata
from odeon_job.data.raster import (
    check_bands,
    check_same_size,
    grid_of,
    open_raster,
    open_rasters,
    raster_info_of,
    read_valid,
    read_window,
)
from odeon_job.data.samples import Sample
from odeon_job.data.spec import DataSpec, image_scale
from odeon_job.data.transforms import Compose
from odeon_job.data.windows import WholeRows, WindowPlan, check_whole_tile, row_region
from odeon_job.errors import DataError


def check_finite(image: np.ndarray, sample: Sample) -> None:
    """NaN or infinite pixels would make the loss NaN and the run worthless: refused, naming the file."""
    if not np.isfinite(image).all():
        bad = int(np.count_nonzero(~np.isfinite(image)))
        raise DataError(
            f"{sample.origin}: {sample.image} has {bad} NaN or infinite pixel value(s) in the selected "
            "bands; fill them (e.g. gdal_calc.py or rio calc) or leave the tile out of the CSV"
        )


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentations in one epoch (well mixed, so neighbours differ)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


class SegmentationDataset(Dataset):
    """Items → ``{"image": (C, H, W) in raw units, "mask": uint8 (H, W) class indices, "index": int,
    "shape": (H, W), "owned": int}``, and for the test split ``"valid"``: bool (H, W), False where the image is
    nodata (``shape``: the item's own size, where a batch of mixed sizes pads it;
    ``owned``: how many of its pixels it scores, the others being marked ignored: a grid window's share of
    its overlaps).

    An item is asked for by ``index`` or, from the training sampler, ``(index, epoch)``. ``windows`` says which
    window of which row each item reads (one item per row, read whole, when absent); the item's random
    augmentations are drawn from a generator seeded by ``(seed, epoch, index)``.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        spec: DataSpec,
        split: str,
        transform: Compose | None = None,
        seed: int = 0,
        windows: WindowPlan | None = None,
    ) -> None:
        self.samples = samples
        self.spec = spec
        self.split = split
        self.resolution = spec.resolution.get(split)
        self.transform = transform
        self.seed = seed
        self.windows: WindowPlan = windows if windows is not None else WholeRows(len(samples))

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def image_bands(self) -> tuple[int, ...]:
        return self.spec.image_bands

    def read(self, sample: Sample, window: Box | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The image in raw units and the mask as class indices, at the split's resolution: all of the row (a
        tile, or the window its CSV names) or ``window`` of its scene.

        The image stays uint8 for 0-255 imagery (no ``image_max_value``: every image is uint8, or an
        error); with ``image_max_value``, float32 whatever each file's type, so that files of several
        types still make one batch. The module scales it on its device (``InputScaling``).
        """
        image, mask, _ = self._read(sample, window, with_valid=False)
        return image, mask

    def _read(
        self, sample: Sample, window: Box | None, with_valid: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`read`, and where the image has data (``with_valid``: what predictions mark as nodata)."""
        if window is None and sample.window is None:
            image, mask, valid = self._read_tile(sample, with_valid)
        else:
            image, mask, valid = self._read_window(sample, window, with_valid)
        if self.spec.image_max_value is not None:
            image = image.astype(np.float32, copy=False)
            check_finite(image, sample)
        return image, mask, valid

    def _read_tile(self, sample: Sample, with_valid: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A whole file, opened for this read alone (a tile is read once an epoch: keeping it open gains nothing)."""
        bands = self.spec.image_bands
        with open_raster(sample.image, sample.origin, whole_file=True) as src:
            grid = self._image_grid(src, sample)
            region = grid.region(None)
            check_whole_tile(region, sample)
            image = read_window(src, bands, region, grid, sample.origin, Resampling.bilinear)
            valid = read_valid(src, bands, region, grid) if with_valid else None
        with open_raster(sample.mask, sample.origin, whole_file=True) as src:
            return image, self._mask_classes(src, sample, region, grid), valid

    def _read_window(
        self, sample: Sample, window: Box | None, with_valid: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A window of a scene, from datasets kept open by this worker (only the blocks it touches are fetched)."""
        rasters = open_rasters()
        src = rasters.get(sample.image, sample.origin)
        grid = self._image_grid(src, sample)
        if window is None:  # the CSV's window of a tile read whole
            window = row_region(sample, raster_info_of(src), self.resolution)
            check_whole_tile(window, sample)
        bands = self.spec.image_bands
        image = read_window(src, bands, window, grid, sample.origin, Resampling.bilinear)
        valid = read_valid(src, bands, window, grid) if with_valid else None
        return image, self._mask_classes(rasters.get(sample.mask, sample.origin), sample, window, grid), valid

    def read_classes(self, sample: Sample, window: Box) -> np.ndarray:
        """The mask alone as class indices, in ``window`` of the row's grid (``odeon validate`` counts classes so,
        a window at a time, whatever the scene's size)."""
        return self._mask_classes(open_rasters().get(sample.mask, sample.origin), sample, window)

    def _image_grid(self, src: rasterio.io.DatasetReader, sample: Sample) -> SceneGrid:
        """The image's grid at the split's resolution, once its bands and pixel scale are checked."""
        check_bands(self.spec.image_bands, src.count, sample.image, sample.origin, "image_bands")
        image_scale(src.dtypes[0], self.spec.image_max_value, sample)  # refuses what has no known scale
        return grid_of(src, self.resolution)

    def _mask_classes(
        self, src: rasterio.io.DatasetReader, sample: Sample, window: Box, image_grid: SceneGrid | None = None
    ) -> np.ndarray:
        """``window`` of the mask ``src`` (on the image's grid, checked when given) as class indices."""
        check_bands(self.spec.mask_bands, src.count, sample.mask, sample.origin, "mask_bands")
        grid = grid_of(src, self.resolution)
        if image_grid is not None:
            check_same_size(
                (image_grid.height, image_grid.width),
                (grid.height, grid.width),
                sample.image,
                sample.mask,
                sample.origin,
            )
        raw = read_window(src, self.spec.mask_bands, window, grid, sample.origin, Resampling.nearest)
        return self._classes(raw, src.nodata, sample)

    def _classes(self, raw: np.ndarray, file_nodata: float | None, sample: Sample) -> np.ndarray:
        spec, where = self.spec, f"{sample.origin}: {sample.mask}"
        nodata = mask_nodata(spec.mask_nodata, file_nodata, spec.n_classes, spec.mask_encoding == "one_hot", where)
        return class_indices(raw, spec.n_classes, spec.mask_encoding == "one_hot", nodata, where)

    def origin(self, index: int, epoch: int = 0) -> str:
        """The CSV row of an item (and its window of the scene), for messages."""
        read = self.windows(index, epoch)
        origin = self.samples[read.row].origin
        if read.window is None:
            return origin
        row, col, height, width = read.window
        return f"{origin} (window col {col}, row {row}, {width}x{height})"

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        read = self.windows(index, epoch)
        image, mask, valid = self._read(self.samples[read.row], read.window, with_valid=self.split == "test")
        mask, owned = read.ignore_unowned(mask, ignore_value(self.spec.n_classes))
        image_t, mask_t = torch.from_numpy(image), torch.from_numpy(mask)
        if self.transform is not None:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
            image_t, mask_t = self.transform(image_t, mask_t, generator)
        item = {"image": image_t, "mask": mask_t, "index": index, "shape": torch.tensor(mask_t.shape), "owned": owned}
        if valid is not None:  # the test split's: its predictions mark the image's nodata (no transform there)
            item["valid"] = torch.from_numpy(valid)
        return item
