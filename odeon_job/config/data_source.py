"""``data_source``: where the tiles or scenes are and how to read them."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from odeon_job.config import catalog
from odeon_job.config.colors import COLOR_PATTERN
from odeon_job.config.values import (
    MAX_ITEM_SIDE,
    SPLITS,
    Augmentation,
    Section,
    Split,
    no_duplicates,
    odeon_error,
    one_or_list,
)
from odeon_job.errors import quote


def _band_index(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value < 1:
        raise odeon_error(f"band indices are 1-based, as in GDAL: {value} is not a band")
    return value


def _resolution(value: Any) -> Any:
    """A pixel size (x = y), an ``[x, y]`` pair, or per split: a dict of either, or ODEON's list, one per split
    in the order train, val, test (a missing test takes the last one, as ODEON's code does)."""

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0

    def one(v: Any) -> Any:
        if number(v):
            return float(v)
        if isinstance(v, list) and len(v) == 2 and all(number(x) for x in v):
            return [float(x) for x in v]
        raise odeon_error(f"a resolution is a positive pixel size or an [x, y] pair of them, got {quote(v)}")

    if value is None:
        return value
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(SPLITS))
        if unknown:
            raise odeon_error(f"{quote(unknown[0])} is not a split (train, val, test)")
        return {split: one(v) for split, v in value.items()}
    per_split = isinstance(value, list) and (
        len(value) == 3 or (len(value) in (1, 2) and any(isinstance(v, list) for v in value))
    )
    if per_split:
        return {split: one(value[min(i, len(value) - 1)]) for i, split in enumerate(SPLITS)}
    if isinstance(value, list) and len(value) == 2 and all(number(v) for v in value) and value[0] != value[1]:
        raise odeon_error(
            f"{quote(value)} is ambiguous: ODEON reads it as train {value[0]}, val and test {value[1]}; a "
            f'pixel size would be x {value[0]}, y {value[1]}. Write {{"train": {value[0]}, "val": '
            f'{value[1]}, "test": {value[1]}}} for the first, [{quote(value)}] (one pair for every split) '
            "for the second"
        )
    return one(value)


BandList = Annotated[list[Annotated[int, BeforeValidator(_band_index)]], Field(min_length=1)]


PixelSize = float | list[float]


class NormalizationStats(Section):
    """Mean and standard deviation of each selected image band, in the 0-1 range."""

    mean: list[float] = Field(min_length=1)
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> NormalizationStats:
        if len(self.mean) != len(self.std):
            raise odeon_error(f"{len(self.std)} values but mean has {len(self.mean)}", field="std")
        return self


class DataSource(Section):
    """Where the tiles are and how to read them."""

    train_file: str = Field(description="CSV of image,mask pairs for the train split.")
    val_file: str | None = Field(
        None, description="CSV for the validation split; without it, percentage_val of the train CSV is held out."
    )
    test_file: str | None = Field(None, description="CSV for the test split, evaluated after training.")
    percentage_val: float = Field(
        0.3, gt=0, lt=1, description="Fraction of train_file held out for validation when val_file is absent."
    )
    image_bands: BandList | None = Field(None, description="1-based image bands to use; all bands when absent.")
    mask_bands: BandList | None = Field(
        None,
        description="1-based mask bands, one per class; all bands when "
        "absent. A single band is read as class indices 0..n-1.",
    )
    class_labels: list[str] | None = Field(None, description="One label per class; 'class 1'...'class n' when absent.")
    class_colors: list[Annotated[str, Field(pattern=COLOR_PATTERN.pattern)]] | None = Field(
        None,
        description='Extension: one colour per class, "#rrggbb", for class maps, their styles and every figure; '
        "a palette colour-blind readers can tell apart when absent.",
    )
    resolution: Annotated[PixelSize | dict[Split, PixelSize] | None, BeforeValidator(_resolution)] = Field(
        None,
        description="Pixel size to read the tiles at (resampled when it differs from the files'), "
        "for the whole dataset or per split; the files' own when absent.",
    )
    normalization_weights: dict[Split, NormalizationStats] | None = Field(
        None, description="Per split mean/std (0-1 range) for (x - mean) / std; scaling to 0-1 only when absent."
    )
    data_augmentation: dict[Split, Annotated[list[Augmentation], BeforeValidator(one_or_list)]] | None = Field(
        None, description="Augmentations per split (train only): rotation90, rotation, radiometry."
    )
    mask_nodata: float | Literal["auto", "file", "none"] = Field(
        "auto",
        description="Extension: the mask value whose pixels are ignored (left out of the loss and the "
        'metrics): a number, "file" (the mask file\'s own nodata value, if it declares one), "none", or '
        '"auto": the file\'s own unless it could also be data (a class index, an "on" value of one-hot '
        'bands), which is then an error asking for "file" or "none". Pixels of a one-hot mask where no '
        "selected band is on are always ignored.",
    )
    image_max_value: float | None = Field(
        None,
        gt=0,
        description="Extension: the raw value that scales to 1.0. Defaults to 255 for uint8 "
        "images and is required for any other data type (e.g. 10000 for Sentinel-2 L2A).",
    )
    patch_size: int | None = Field(
        None,
        ge=8,
        description="Extension: read every CSV row as a scene of any size, in windows of patch_size x "
        "patch_size pixels (at the split's resolution): random windows for training (train_windows), a regular grid "
        "for validation and test (grid_overlap). Without it each row is one tile, read whole, as the specification "
        "says. A row may add col_off,row_off,width,height (the image's pixels) to use only that window of its scene.",
    )
    train_windows: Annotated[int, Field(ge=1)] | Literal["area"] = Field(
        "area",
        description="Extension, with patch_size: random training windows per epoch: a number in all (scenes "
        'drawn in proportion to their area), or "area": each scene gives as many as it holds patches.',
    )
    grid_overlap: int = Field(
        0,
        ge=0,
        description="Extension, with patch_size: pixels shared by neighbouring "
        "windows of the validation and test grids. Predictions average the overlaps; metrics "
        "count every pixel once.",
    )

    @field_validator("image_bands", "mask_bands", "class_labels")
    @classmethod
    def _unique(cls, values: list[Any] | None) -> list[Any] | None:
        return no_duplicates(values)

    @field_validator("class_labels")
    @classmethod
    def _usable_labels(cls, labels: list[str] | None) -> list[str] | None:
        problem = catalog.label_problem(labels) if labels else None
        if problem:
            raise odeon_error(problem)
        return labels

    @field_validator("mask_nodata")
    @classmethod
    def _finite_nodata(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not math.isfinite(value):
            raise odeon_error(
                f'{value} matches no pixel of an integer mask: give a finite number, or "file" to ignore '
                "the pixels of each mask's own nodata (NaN included, in a float mask)"
            )
        return value

    @model_validator(mode="after")
    def _windows_need_a_patch_size(self) -> DataSource:
        for key in ("train_windows", "grid_overlap"):  # (a saved configuration holds their defaults: those pass)
            if self.patch_size is None and getattr(self, key) != type(self).model_fields[key].default:
                raise odeon_error("applies to scenes read in windows: set data_source.patch_size too", field=key)
        if self.patch_size is not None and self.patch_size > MAX_ITEM_SIDE:
            raise odeon_error(
                f"{self.patch_size} pixels: at most {MAX_ITEM_SIDE} (a window goes through the network in one "
                f"piece, and {MAX_ITEM_SIDE}² pixels already take gigabytes of activations per window); "
                "windows of 256 to 1024 pixels are usual",
                field="patch_size",
            )
        if self.patch_size is not None and self.grid_overlap >= self.patch_size:
            raise odeon_error(
                f"{self.grid_overlap} pixels, but windows are {self.patch_size} wide: the overlap must be "
                "smaller than patch_size",
                field="grid_overlap",
            )
        return self

    @property
    def reads_scenes(self) -> bool:
        """The job's two modes, asked here only: rows are scenes read in windows of ``patch_size`` (True), or
        tiles read whole, as the specification says (False)."""
        return self.patch_size is not None

    @property
    def item_name(self) -> str:
        """What one item of a split is, for messages: a window of a scene, or a tile."""
        return "window" if self.reads_scenes else "tile"

    @field_validator("data_augmentation")
    @classmethod
    def _train_only(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        for split in ("val", "test"):
            if value and value.get(split):
                raise odeon_error(f"augmentations apply to the train split only, got {value[split]}", field=split)
        return value
