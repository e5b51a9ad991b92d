"""A map-style dataset of image/mask tiles read with rasterio inside each DataLoader worker."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from rasterio.enums import Resampling
from torch.utils.data import Dataset

from odeon_job.data.raster import check_bands, open_raster, read_bands, shape_at
from odeon_job.data.samples import Sample
from odeon_job.data.spec import DataSpec
from odeon_job.data.transforms import Compose
from odeon_job.errors import DataError


def image_scale(dtype: str, configured: float | None, sample: Sample) -> float:
    """The raw value that maps to 1.0: the configured one, else 255 for uint8; never a silent guess."""
    if configured is not None:
        return configured
    if dtype == "uint8":
        return 255.0
    raise DataError(f"{sample.origin}: {sample.image} is {dtype}, and the 0-255 scaling of the specification "
                    "fits uint8 only: set data_source.image_max_value to the value that means 1.0 "
                    "(e.g. 10000 for Sentinel-2 L2A, 4095 for 12-bit imagery)")


def class_indices(raw: np.ndarray, spec: DataSpec, sample: Sample) -> np.ndarray:
    """(bands, H, W) mask → (H, W) int64 class indices: argmax of one-hot bands, or the band itself."""
    if spec.mask_encoding == "one_hot":
        return raw.argmax(axis=0).astype(np.int64)
    indices = raw[0].astype(np.int64)
    low, high = int(indices.min()), int(indices.max())
    if low < 0 or high >= spec.n_classes:
        bad = high if high >= spec.n_classes else low
        raise DataError(f"{sample.origin}: {sample.mask} holds class index {bad}, outside 0..{spec.n_classes - 1} "
                        f"(data_source.class_labels names {spec.n_classes} classes)")
    return indices


class SegmentationDataset(Dataset):
    """Samples → ``{"image": float32 (C, H, W), "mask": int64 (H, W), "index": int}``."""

    def __init__(self, samples: list[Sample], spec: DataSpec, split: str, transform: Compose | None = None):
        self.samples = samples
        self.spec = spec
        self.resolution = spec.resolution.get(split)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """The image scaled to 0-1 and the mask as class indices, at the split's resolution."""
        spec = self.spec
        with open_raster(sample.image, sample.origin) as src:
            check_bands(spec.image_bands, src.count, sample.image, sample.origin, "image_bands")
            scale = image_scale(src.dtypes[0], spec.image_max_value, sample)
            shape = shape_at(src, self.resolution)
            image = read_bands(src, spec.image_bands, sample.origin, shape, Resampling.bilinear)
        with open_raster(sample.mask, sample.origin) as src:
            check_bands(spec.mask_bands, src.count, sample.mask, sample.origin, "mask_bands")
            mask_shape = shape_at(src, self.resolution)
            if mask_shape != shape:
                raise DataError(f"{sample.origin}: image {sample.image} is {shape[1]}x{shape[0]} pixels but mask "
                                f"{sample.mask} is {mask_shape[1]}x{mask_shape[0]}")
            raw = read_bands(src, spec.mask_bands, sample.origin, shape, Resampling.nearest)
        return image.astype(np.float32) / np.float32(scale), class_indices(raw, spec, sample)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.read(self.samples[index])
        image_t, mask_t = torch.from_numpy(image), torch.from_numpy(mask)
        if self.transform is not None:
            image_t, mask_t = self.transform(image_t, mask_t)
        return {"image": image_t, "mask": mask_t, "index": index}
