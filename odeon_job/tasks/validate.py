"""``odeon validate``: the configuration and every CSV row, checked without training (and without Lightning).

First every check ``odeon train`` runs before its first step (:mod:`odeon_job.tasks.preflight`); then, row by row,
each image and mask must exist and open, hold the selected bands, have the same size (at the configured
resolution) and, when both are georeferenced, the same CRS and transform; each mask is read to count its
ignored pixels and to find class values outside the classes.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from odeon_job.config import JobConfig
from odeon_job.data.dataset import SegmentationDataset
from odeon_job.data.grid import Box
from odeon_job.data.masks import count_ignored
from odeon_job.data.raster import RasterInfo, check_bands, check_same_size, raster_info, same_grid
from odeon_job.data.samples import Sample
from odeon_job.data.spec import DataSpec, image_scale
from odeon_job.data.windows import GridWindows, check_whole_tile, row_region
from odeon_job.errors import DataError, OdeonError
from odeon_job.tasks.preflight import check_before_training

log = logging.getLogger("odeon")

#: Files are checked this many at a time: opening is I/O bound, most of all on object storage.
PARALLEL_OPENS = 8
#: Masks are read in windows of at most this many pixels a side (a few MB each, 8 at a time).
COUNT_WINDOW = 1024


@dataclass
class SampleCheck:
    image: RasterInfo | None = None
    mask: RasterInfo | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Mask pixels read, and those of no class (left out of the loss and metrics).
    pixels: int = 0
    ignored: int = 0


@dataclass
class ValidationSummary:
    spec: DataSpec
    counts: dict[str, int]
    sizes: Counter = field(default_factory=Counter)
    dtypes: Counter = field(default_factory=Counter)
    crs: Counter = field(default_factory=Counter)
    resolutions: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Per split: mask pixels read, and those ignored.
    pixels: Counter = field(default_factory=Counter)
    ignored: Counter = field(default_factory=Counter)
    #: Per split: tile sizes (width, height) at the split's resolution.
    split_sizes: dict[str, Counter] = field(default_factory=dict)
    #: Per split: windows per epoch (training) or per evaluation, when scenes are read in windows.
    windows: dict[str, int] = field(default_factory=dict)
    #: Scenes stored in strips, and the first row naming one.
    striped: set[str] = field(default_factory=set)
    first_striped: str = ""


def check_sample(sample: Sample, dataset: SegmentationDataset, scenes: bool) -> SampleCheck:
    """Every check of one row of ``dataset``'s split; problems are collected, not raised, so one scan reports them
    all. ``scenes``: rows are read in windows (data_source.patch_size), not whole."""
    check = SampleCheck()
    where, spec = sample.origin, dataset.spec
    try:
        check.image = raster_info(sample.image, where)
        check.mask = raster_info(sample.mask, where)
    except OdeonError as error:
        check.problems.append(str(error))
        return check
    image, mask = check.image, check.mask
    grid, mask_grid = image.grid(dataset.resolution), mask.grid(dataset.resolution)

    def region_fits() -> None:
        region = row_region(sample, image, dataset.resolution)
        if not scenes:
            check_whole_tile(region, sample)

    checks = [
        lambda: check_bands(spec.image_bands, image.count, sample.image, where, "image_bands"),
        lambda: check_bands(spec.mask_bands, mask.count, sample.mask, where, "mask_bands"),
        lambda: image_scale(image.dtype, spec.image_max_value, sample),
        lambda: check_same_size(
            (grid.height, grid.width), (mask_grid.height, mask_grid.width), sample.image, sample.mask, where
        ),
        region_fits,
    ]
    for run_check in checks:
        try:
            run_check()
        except DataError as error:
            check.problems.append(str(error))
    if image.crs and mask.crs and (image.width, image.height) == (mask.width, mask.height):
        if image.crs != mask.crs:
            check.problems.append(f"{where}: image CRS {image.crs} differs from mask CRS {mask.crs}")
        elif not same_grid(image.transform, mask.transform):
            check.problems.append(f"{where}: image and mask are not on the same grid (their transforms differ)")
    elif image.crs and not mask.crs:
        check.warnings.append(f"{where}: mask {sample.mask} is not georeferenced; alignment cannot be checked")
    if not check.problems:
        _count_mask_pixels(check, sample, dataset, grid.region(sample.window))
    return check


def _count_mask_pixels(check: SampleCheck, sample: Sample, dataset: SegmentationDataset, region: Box) -> None:
    """Read the mask as training will, in windows of at most :data:`COUNT_WINDOW` pixels a side (memory bounded
    whatever the scene's size): count the pixels of no class, refuse values outside the classes."""
    windows = GridWindows(np.array([region], dtype=np.int64), COUNT_WINDOW, 0)
    try:
        for index in range(len(windows)):
            read = windows(index)
            assert read.window is not None
            classes = read.owned_part(dataset.read_classes(sample, read.window))
            check.pixels += classes.size
            check.ignored += count_ignored(classes, dataset.spec.n_classes)
    except DataError as error:
        check.problems.append(str(error))


def _with_progress(results: Iterable[SampleCheck], total: int) -> Iterable[SampleCheck]:
    last = time.monotonic()
    for done, result in enumerate(results, 1):
        if time.monotonic() - last > 5:
            log.info("checked %d/%d samples", done, total)
            last = time.monotonic()
        yield result


def validate(config: JobConfig, rows: int | None = None) -> ValidationSummary:
    """Scan every row of every split (the first ``rows`` of each when given); raises only for problems
    that stop the scan itself."""
    # Every check `odeon train` runs before its first step, but GPUs: validate may run on a laptop, or in the
    # chart's test pod, which has none.
    findings = check_before_training(config, on_this_machine=False)
    splits, spec = findings.splits, findings.spec
    summary = ValidationSummary(spec=spec, counts={split: len(samples) for split, samples in splits.items()})
    scenes = config.data_source.reads_scenes
    if scenes:
        summary.windows = {split: len(plan) for split, plan in findings.windows.items()}
    jobs = [(sample, split) for split, samples in splits.items() for sample in samples[:rows]]
    datasets = {split: SegmentationDataset(samples, spec, split) for split, samples in splits.items()}
    with ThreadPoolExecutor(max_workers=PARALLEL_OPENS) as pool:
        checks = pool.map(lambda job: check_sample(job[0], datasets[job[1]], scenes), jobs)
        for (sample, split), check in zip(jobs, _with_progress(checks, len(jobs)), strict=True):
            summary.problems.extend(check.problems)
            summary.warnings.extend(check.warnings)
            summary.pixels[split] += check.pixels
            summary.ignored[split] += check.ignored
            if check.image is not None and scenes and check.image.striped:
                summary.striped.add(sample.image)
                summary.first_striped = summary.first_striped or f"{sample.origin}: {sample.image}"
            if check.image is not None:
                grid = check.image.grid(spec.resolution.get(split))
                summary.split_sizes.setdefault(split, Counter())[(grid.width, grid.height)] += 1
                summary.sizes[(check.image.width, check.image.height)] += 1
                summary.dtypes[check.image.dtype] += 1
                summary.crs[check.image.crs or "none"] += 1
                summary.resolutions[tuple(round(r, 6) for r in check.image.res)] += 1
    if summary.striped:
        summary.warnings.append(
            f"{len(summary.striped)} scene(s) stored in strips (the first: {summary.first_striped}): a window reads "
            "every column of its rows, several times the bytes of a tiled file; convert them to Cloud-Optimized "
            "GeoTIFFs (gdal_translate -of COG) to read only the blocks a window touches"
        )
    for split, sizes in summary.split_sizes.items():
        if len(sizes) > 1 and not scenes:  # scenes of many sizes are read in windows of one size
            shown = ", ".join(f"{w}x{h} ({count})" for (w, h), count in sizes.most_common(4))
            summary.warnings.append(
                f"{split}: tiles of {len(sizes)} sizes ({shown}): each batch is padded to its "
                "largest tile and the padding is ignored (left out of the loss and metrics); "
                "tiles of one size train faster"
            )
    return summary


def format_summary(summary: ValidationSummary) -> list[str]:
    """The lines ``odeon validate`` prints."""
    spec = summary.spec

    def most(counter: Counter, show: Callable[[Any], str] = str) -> str:
        return ", ".join(f"{show(key)} ({count})" for key, count in counter.most_common(4)) or "-"

    encoding = "one band per class" if spec.mask_encoding == "one_hot" else "class indices in one band"
    ignored = ", ".join(
        f"{split} {summary.ignored[split] / summary.pixels[split]:.1%}"
        for split in summary.pixels
        if summary.pixels[split]
    )
    return [
        "samples: " + ", ".join(f"{split} {count}" for split, count in summary.counts.items()),
        *(
            [
                "windows: "
                + ", ".join(f"{split} {count}" for split, count in summary.windows.items())
                + " (train: per epoch)"
            ]
            if summary.windows
            else []
        ),
        "tile size: " + most(summary.sizes, lambda s: f"{s[0]}x{s[1]}"),
        f"image bands: {list(spec.image_bands)}, data type: {most(summary.dtypes)}",
        f"mask bands: {list(spec.mask_bands)} ({encoding})",
        f"classes: {spec.n_classes} ({', '.join(spec.class_labels)})",
        "CRS: " + most(summary.crs) + "; pixel size: " + most(summary.resolutions, lambda r: f"{r[0]:g} x {r[1]:g}"),
        f"ignored pixels (left out of the loss and every metric: {spec.ignored_pixels_rule()}): {ignored or '-'}",
    ]
