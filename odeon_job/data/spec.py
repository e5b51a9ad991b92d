"""What the pipeline knows about the tiles: bands, classes, how masks encode them, pixel scale.

Settled once, in the main process, from the configuration and, only where the configuration leaves
it open (bands not listed), from the first training sample. It travels inside checkpoints, so a
checkpoint can rebuild its model without the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from odeon_job.config import SPLITS, DataSource, count_problem
from odeon_job.data.raster import check_bands, raster_info
from odeon_job.data.samples import Sample
from odeon_job.errors import DataError

MaskEncoding = Literal["one_hot", "class_index"]


@dataclass(frozen=True)
class DataSpec:
    image_bands: tuple[int, ...]
    mask_bands: tuple[int, ...]
    class_labels: tuple[str, ...]
    #: one_hot: one mask band per class, the class is the argmax; class_index: one band of 0..n-1.
    mask_encoding: MaskEncoding
    #: The raw value that scales to 1.0; None: 255 for uint8 images, an error for other types.
    image_max_value: float | None
    #: Pixel size (x, y) each split is read at; None keeps the files' own.
    resolution: dict[str, tuple[float, float] | None]
    #: The mask value whose pixels are ignored: a number, "file" (each mask's own nodata), "none", or "auto" (the
    #: default: the file's own unless it could also be a class, see ``data_source.mask_nodata``).
    mask_nodata: float | str = "auto"

    @property
    def in_channels(self) -> int:
        return len(self.image_bands)

    @property
    def n_classes(self) -> int:
        return len(self.class_labels)

    @property
    def pixel_scale(self) -> float:
        """The raw image value that means 1.0 (uint8 imagery when none is configured: 255)."""
        return self.image_max_value if self.image_max_value is not None else 255.0

    def ignored_pixels_rule(self) -> str:
        """Which mask pixels are left out of the loss and metrics, in words."""
        if self.mask_encoding == "one_hot":
            rule = f"pixels where none of the mask bands {list(self.mask_bands)} is on"
        else:
            rule = "no pixel"
        if self.mask_nodata in ("auto", "file"):
            nodata = "the mask files' nodata value (where they declare one)"
        elif self.mask_nodata == "none":
            return rule
        else:
            nodata = f"the mask value {self.mask_nodata:g}"
        return f"{rule} and pixels of {nodata}" if self.mask_encoding == "one_hot" else f"pixels of {nodata}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSpec:
        resolution = {k: tuple(v) if v is not None else None for k, v in data["resolution"].items()}
        return cls(
            image_bands=tuple(data["image_bands"]),
            mask_bands=tuple(data["mask_bands"]),
            class_labels=tuple(data["class_labels"]),
            mask_encoding=data["mask_encoding"],
            image_max_value=data["image_max_value"],
            resolution=resolution,
            mask_nodata=data.get("mask_nodata", "auto"),
        )


def image_scale(dtype: str, configured: float | None, sample: Sample) -> float:
    """The raw value that maps to 1.0: the configured one, else 255 for uint8; never a silent guess."""
    if configured is not None:
        return configured
    if dtype == "uint8":
        return 255.0
    raise DataError(
        f"{sample.origin}: {sample.image} is {dtype}, and the 0-255 scaling of the specification "
        "fits uint8 only: set data_source.image_max_value to the value that means 1.0 "
        "(e.g. 10000 for Sentinel-2 L2A, 4095 for 12-bit imagery)"
    )


def split_resolutions(source: DataSource) -> dict[str, tuple[float, float] | None]:
    """The (x, y) pixel size each split is read at (None: the files' own)."""

    def pair(value: float | list[float] | None) -> tuple[float, float] | None:
        if value is None:
            return None
        return (float(value), float(value)) if isinstance(value, (int, float)) else (value[0], value[1])

    if isinstance(source.resolution, dict):
        return {split: pair(source.resolution.get(split)) for split in SPLITS}
    return {split: pair(source.resolution) for split in SPLITS}


def describe_data(
    source: DataSource, first: Sample, weights: Mapping[str, Sequence[float] | None] | None = None
) -> DataSpec:
    """The :class:`DataSpec` of ``source``; ``first`` (a training sample) fills in unlisted bands. The counts of
    bands, classes and ``weights`` (one per class, by field: ``TrainSetup.per_class_weights``) must agree."""
    image_count = raster_info(first.image, first.origin).count
    mask_count = raster_info(first.mask, first.origin).count
    image_bands = source.image_bands or list(range(1, image_count + 1))
    mask_bands = source.mask_bands or list(range(1, mask_count + 1))
    check_bands(image_bands, image_count, first.image, first.origin, "image_bands")
    check_bands(mask_bands, mask_count, first.mask, first.origin, "mask_bands")

    problem = count_problem(
        source,
        weights or {},
        len(image_bands),
        len(mask_bands),
        f"{first.image} has" if source.image_bands is None else "image_bands selects",
        f"{first.mask} has" if source.mask_bands is None else "mask_bands selects",
    )
    if problem:
        raise DataError(f"{first.origin}: {problem[0]}: {problem[1]}")
    encoding: MaskEncoding = "class_index" if len(mask_bands) == 1 else "one_hot"
    labels = source.class_labels or [f"class {i}" for i in range(1, len(mask_bands) + 1)]

    return DataSpec(
        image_bands=tuple(image_bands),
        mask_bands=tuple(mask_bands),
        class_labels=tuple(labels),
        mask_encoding=encoding,
        image_max_value=source.image_max_value,
        resolution=split_resolutions(source),
        mask_nodata=source.mask_nodata,
    )
