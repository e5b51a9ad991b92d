"""A map-style dataset of image/mask tiles read with rasterio inside each DataLoader worker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from rasterio.enums import Resampling
from torch.utils.data import Dataset

from odeon_job.data.masks import class_indices, mask_nodata
from odeon_job.data.raster import check_bands, check_same_size, open_raster, read_bands, shape_at
from odeon_job.data.samples import Sample
from odeon_job.data.spec import DataSpec, image_scale
from odeon_job.data.transforms import Compose
from odeon_job.errors import DataError


def check_finite(image: np.ndarray, sample: Sample) -> None:
    """NaN or infinite pixels would make the loss NaN and the run worthless: refused, naming the file."""
    if not np.isfinite(image).all():
        bad = int(np.count_nonzero(~np.isfinite(image)))
        raise DataError(f"{sample.origin}: {sample.image} has {bad} NaN or infinite pixel value(s) in the selected "
                        "bands; fill them (e.g. gdal_calc.py or rio calc) or leave the tile out of the CSV")


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentations in one epoch (well mixed, so neighbours differ)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


class SegmentationDataset(Dataset):
    """Samples → ``{"image": (C, H, W) in raw units, "mask": uint8 (H, W) class indices, "index": int,
    "shape": (H, W)}`` (``shape``: the tile's own size, where a batch of mixed sizes pads it).

    An item is asked for by ``index`` or, from the training sampler, ``(index, epoch)``; the sample's
    random augmentations are drawn from a generator seeded by ``(seed, epoch, index)``.
    """

    def __init__(self, samples: Sequence[Sample], spec: DataSpec, split: str, transform: Compose | None = None,
                 seed: int = 0) -> None:
        self.samples = samples
        self.spec = spec
        self.split = split
        self.resolution = spec.resolution.get(split)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """The image in raw units and the mask as class indices, at the split's resolution.

        The image stays uint8 for 0-255 imagery (no ``image_max_value``: every image is uint8, or an
        error); with ``image_max_value``, float32 whatever each file's type, so that files of several
        types still make one batch. The module scales it on its device (``InputScaling``).
        """
        spec = self.spec
        with open_raster(sample.image, sample.origin, whole_file=True) as src:
            check_bands(spec.image_bands, src.count, sample.image, sample.origin, "image_bands")
            image_scale(src.dtypes[0], spec.image_max_value, sample)  # refuses what has no known scale
            shape = shape_at(src.height, src.width, src.res, self.resolution)
            image = read_bands(src, spec.image_bands, sample.origin, shape, Resampling.bilinear)
        with open_raster(sample.mask, sample.origin, whole_file=True) as src:
            check_bands(spec.mask_bands, src.count, sample.mask, sample.origin, "mask_bands")
            check_same_size(shape, shape_at(src.height, src.width, src.res, self.resolution), sample.image,
                            sample.mask, sample.origin)
            raw = read_bands(src, spec.mask_bands, sample.origin, shape, Resampling.nearest)
            nodata = mask_nodata(spec.mask_nodata, src.nodata, spec.n_classes, spec.mask_encoding == "one_hot",
                                 f"{sample.origin}: {sample.mask}")
        if spec.image_max_value is not None:
            image = image.astype(np.float32, copy=False)
            check_finite(image, sample)
        return image, class_indices(raw, spec.n_classes, spec.mask_encoding == "one_hot", nodata,
                                    f"{sample.origin}: {sample.mask}")

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        image, mask = self.read(self.samples[index])
        image_t, mask_t = torch.from_numpy(image), torch.from_numpy(mask)
        if self.transform is not None:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
            image_t, mask_t = self.transform(image_t, mask_t, generator)
        return {"image": image_t, "mask": mask_t, "index": index, "shape": torch.tensor(mask_t.shape)}
