"""Mask bands → class indices, with the pixels that belong to no class marked as ignored.

A pixel is ignored (left out of the loss and of every metric, and counted) when:

- one band per class (one-hot): none of the selected bands is on (> 0, and not the mask's nodata value),
  e.g. a pixel of a class that ``mask_bands`` leaves out, or a pixel no class covers;
- one band of class indices: it holds the mask's nodata value (``data_source.mask_nodata``, by default
  the file's own nodata, refused when it could also be a class). Any other value outside ``0..n-1`` is
  an error naming the file.

Nothing here imports torch: ``odeon validate`` counts ignored pixels with the same code as training.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from odeon_job.errors import DataError

if TYPE_CHECKING:
    import torch

#: The class index of an ignored pixel once a batch is on its device (int64 masks).
IGNORE_INDEX = -1
#: The same, in the uint8 masks that leave the DataLoader workers (classes 0..254 fit beside it).
UINT8_IGNORE = 255
#: ``data_source.mask_nodata`` values that are not numbers: the file's own nodata unless it could be a class
#: value (the default), the file's own nodata whatever it is, or none at all.
AUTO_NODATA, FILE_NODATA, NO_NODATA = "auto", "file", "none"


def mask_dtype(n_classes: int) -> type:
    """uint8 when the classes and the ignore marker fit (8 times fewer bytes between processes), else int64."""
    return np.uint8 if n_classes < UINT8_IGNORE else np.int64


def ignore_value(n_classes: int) -> int:
    """The marker of an ignored pixel in the masks of :func:`mask_dtype`."""
    return UINT8_IGNORE if mask_dtype(n_classes) is np.uint8 else IGNORE_INDEX


def mask_nodata(
    setting: int | float | str, file_nodata: float | None, n_classes: int, one_hot: bool, where: str
) -> float | None:
    """The value whose pixels are ignored: the configured one, the file's, or None.

    With "auto" (the default), a file's nodata that could also be data is refused rather than guessed: a
    class index of a class-index mask (nodata 0 where 0 is a class), an "on" value (> 0) of a one-hot mask
    (nodata 255 on 0/255 bands would ignore every labelled pixel)."""
    if setting == NO_NODATA:
        return None
    if setting == FILE_NODATA:
        return file_nodata
    if setting != AUTO_NODATA:
        return float(setting)
    if file_nodata is None or math.isnan(file_nodata):
        return file_nodata
    if one_hot and file_nodata > 0:
        clash = 'a value its class bands may hold for "on"'
    elif not one_hot and float(file_nodata).is_integer() and 0 <= file_nodata < n_classes:
        clash = f"also the class index {file_nodata:g}"
    else:
        return file_nodata
    raise DataError(
        f'{where} declares nodata {file_nodata:g}, {clash}: set data_source.mask_nodata to "file" '
        'to ignore those pixels, or to "none" to train on them'
    )


def _is_nodata(values: np.ndarray, nodata: float) -> np.ndarray:
    return np.isnan(values) if math.isnan(nodata) else values == nodata


def class_indices(raw: np.ndarray, n_classes: int, one_hot: bool, nodata: float | None, where: str) -> np.ndarray:
    """(bands, H, W) mask values → (H, W) class indices of :func:`mask_dtype`, ignored pixels marked with
    :func:`ignore_value`. ``where`` names the row and file in errors."""
    dtype, ignored = mask_dtype(n_classes), ignore_value(n_classes)
    if one_hot:
        if nodata is not None:
            raw = np.where(_is_nodata(raw, nodata), 0, raw)  # nodata is "off" in every band
        indices, largest = first_argmax(raw, dtype)
        indices[~(largest > 0)] = ignored  # no selected class is on (NaN included)
        return indices
    band = raw[0]
    low, high = band.min(), band.max()  # nearly always: every value a class, no nodata among them (NaN fails)
    if 0 <= low and high < n_classes and (nodata is None or not low <= nodata <= high):
        return band.astype(dtype, copy=False)
    outside = ~((band >= 0) & (band < n_classes))
    if nodata is not None:
        outside &= ~_is_nodata(band, nodata)
    if outside.any():
        bad = band[outside].flat[0]
        known = f"; its nodata value {nodata:g} is ignored" if nodata is not None else ""
        raise DataError(
            f"{where} holds class index {bad:g}, outside 0..{n_classes - 1} (data_source.class_labels "
            f"names {n_classes} classes{known}); set data_source.mask_nodata to the value to ignore"
        )
    indices = band.astype(dtype)
    if nodata is not None:
        indices[_is_nodata(band, nodata)] = ignored
    return indices


def first_argmax(raw: np.ndarray, dtype: Any = np.int64) -> tuple[np.ndarray, np.ndarray]:
    """``raw.argmax(axis=0)`` (the first band holding the largest value) and that largest value, band by
    band: numpy's argmax along the first axis of a (bands, H, W) array walks memory with a stride and is
    3-4 times slower."""
    best = raw[0].copy()
    indices = np.zeros(raw.shape[1:], dtype)
    for band in range(1, raw.shape[0]):
        larger = raw[band] > best
        indices[larger] = band
        np.maximum(best, raw[band], out=best)
    return indices, best


def count_ignored(indices: np.ndarray, n_classes: int) -> int:
    return int(np.count_nonzero(indices == ignore_value(n_classes)))


def as_long_classes(mask: torch.Tensor) -> torch.Tensor:
    """A batch of masks as the workers send them → int64 class indices, ignored pixels at ``IGNORE_INDEX``."""
    indices = mask.long()
    if mask.dtype.itemsize == 1:  # uint8: the marker is 255
        indices[mask == UINT8_IGNORE] = IGNORE_INDEX
    return indices
