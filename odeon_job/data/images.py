"""Images without masks, for ``odeon predict``: the list a user gives (a CSV, a folder, a glob, an ``s3://`` prefix) and
a dataset that reads each one in a grid of windows, as the test split reads its scenes.

No raster is opened to build the list; each image's header is read once, in parallel, when its windows are planned.
"""

from __future__ import annotations

import csv
import io
import posixpath
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from rasterio.enums import Resampling
from torch.utils.data import Dataset

from odeon_job import storage
from odeon_job.data.dataset import check_finite
from odeon_job.data.raster import (
    RasterInfo,
    check_bands,
    grid_of,
    open_rasters,
    raster_info,
    read_valid,
    read_window,
)
from odeon_job.data.samples import WINDOW_COLUMNS, RowWindow, Sample, is_header, window_of
from odeon_job.data.spec import DataSpec, image_scale
from odeon_job.data.windows import PARALLEL_OPENS, GridWindows, row_region
from odeon_job.errors import DataError, quote

#: What a folder, prefix or glob lists: the GeoTIFFs in it.
IMAGE_SUFFIXES = (".tif", ".tiff", ".TIF", ".TIFF")


def list_images(images: str) -> list[Sample]:
    """The images ``images`` names, in order: the rows of a CSV (``image`` or ``image,col_off,row_off,width,height``,
    paths relative to the CSV), the GeoTIFFs of a folder or ``s3://`` prefix, or those a glob matches."""
    if images.lower().endswith(".csv"):
        found = _csv_images(images)
    elif any(c in images for c in "*?["):
        found = [Sample(url, "", url) for url in storage.glob(images) if url.endswith(IMAGE_SUFFIXES)]
    elif images.endswith(IMAGE_SUFFIXES):
        found = [Sample(images, "", images)]
    else:
        folder = images.rstrip("/")
        found = [Sample(url, "", url) for url in storage.glob(folder + "/*") if url.endswith(IMAGE_SUFFIXES)]
    if not found:
        raise DataError(f"{images}: no image to predict (a CSV of images, a folder or prefix of GeoTIFFs, or a glob)")
    return found


def _csv_images(csv_url: str) -> list[Sample]:
    resolve = storage.resolver(storage.parent(csv_url))
    reader = csv.reader(io.StringIO(storage.read_text(csv_url), newline=None))
    found: list[Sample] = []
    first, line = True, 0
    try:
        for fields in reader:
            fields = [field.strip() for field in fields]
            line, start = reader.line_num, line + 1
            if not any(fields):
                continue
            if first and is_header(fields):
                first = False
                continue
            first = False
            where = f"{csv_url} row {start}"
            if len(fields) not in (1, 5) or not all(fields):
                raise DataError(
                    f"{where}: expected 'image' or 'image,{','.join(WINDOW_COLUMNS)}', got {len(fields)} field(s): "
                    f"{quote(','.join(fields), 120)}"
                )
            window: RowWindow | None = None
            if len(fields) == 5:
                col, row, width, height = window_of(fields[1:], where)
                window = (col, row, width, height)
            found.append(Sample(resolve(fields[0]), "", where, window))
    except csv.Error as error:
        raise DataError(f"{csv_url} row {reader.line_num}: not a CSV row ({error})") from error
    return found


def output_names(samples: Sequence[Sample]) -> list[str]:
    """Each image's output file: its name (``.tif``), or, where two images share a name, its path's folders joined
    by ``_`` from the first that tells them apart (``a/x.tif``, ``b/x.tif`` → ``a_x.tif``, ``b_x.tif``); a CSV row
    with a window adds ``_<col_off>_<row_off>``."""

    def parts(sample: Sample) -> list[str]:
        path = sample.image.split("://", 1)[-1].split("?", 1)[0]
        return [part for part in path.split("/") if part]

    split = [parts(sample) for sample in samples]
    names: list[str] = []
    for sample, path in zip(samples, split, strict=True):
        depth = 1
        while depth < len(path) and sum(other[-depth:] == path[-depth:] for other in split) > 1:
            depth += 1
        stem = posixpath.splitext("_".join(path[-depth:]))[0]
        if sample.window is not None:
            stem += f"_{sample.window[0]}_{sample.window[1]}"
        names.append(stem + ".tif")
    if len(set(names)) < len(names):  # the same image twice
        names = [f"{row:06d}_{name}" for row, name in enumerate(names, 1)]
    return names


class ImageDataset(Dataset):
    """Items → ``{"image": (C, H, W) in raw units, "valid": bool (H, W), "index": int, "shape": (H, W)}``: window
    ``index`` of a grid over each image's region (all of it, or its CSV window), at ``resolution``."""

    def __init__(self, samples: Sequence[Sample], spec: DataSpec, patch: int, overlap: int) -> None:
        self.samples, self.spec = samples, spec
        self.resolution = spec.resolution.get("test")
        infos = self._headers()
        regions = np.empty((len(samples), 4), dtype=np.int64)
        for index, (sample, info) in enumerate(zip(samples, infos, strict=True)):
            regions[index] = row_region(sample, info, self.resolution)
        self.windows = GridWindows(regions, patch, overlap)

    @property
    def image_bands(self) -> tuple[int, ...]:
        return self.spec.image_bands

    def _headers(self) -> list[RasterInfo]:
        """Each image's header, checked: the model's bands, a pixel type it knows the scale of."""

        def header(sample: Sample) -> RasterInfo:
            info = raster_info(sample.image, sample.origin)
            check_bands(self.spec.image_bands, info.count, sample.image, sample.origin, "image_bands (the model's)")
            image_scale(info.dtype, self.spec.image_max_value, sample)
            if self.spec.image_max_value is None and info.dtype != "uint8":
                raise DataError(f"{sample.origin}: {sample.image} is {info.dtype}; the model was trained on uint8")
            return info

        with ThreadPoolExecutor(max_workers=PARALLEL_OPENS) as pool:
            return list(pool.map(header, self.samples))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        read = self.windows(index)
        sample = self.samples[read.row]
        assert read.window is not None
        src = open_rasters().get(sample.image, sample.origin)
        grid = grid_of(src, self.resolution)
        bands = self.spec.image_bands
        image = read_window(src, bands, read.window, grid, sample.origin, Resampling.bilinear)
        valid = read_valid(src, bands, read.window, grid)
        if self.spec.image_max_value is not None:
            image = image.astype(np.float32, copy=False)
            check_finite(image, sample)
        return {
            "image": torch.from_numpy(image),
            "valid": torch.from_numpy(valid),
            "index": index,
            "shape": torch.tensor(image.shape[-2:]),
        }
