"""Which window of which CSV row each item of a split reads: the window plans.

Without ``data_source.patch_size`` every row is one item, read whole (or the window its CSV columns name):
the tiles of the specification. With it every row is a scene (or the window of a scene its columns name,
its *region*), read in windows of ``patch_size`` pixels:

- training: random windows, each drawn from ``(seed, epoch, index)`` alone, so the batches and their
  augmentations are the same whatever the workers, processes or interruptions (the samplers shard the
  indices, :mod:`odeon_job.data.sampler`);
- validation and test: a regular grid over each region, row by row, every ``patch_size - grid_overlap``
  pixels, the last window of a row or column moved back to end at the region's edge (all windows have
  the patch's size). Each window *owns* the pixels up to the middle of its overlaps with its neighbours,
  and scores only those: the metrics count every pixel of a scene exactly once.

A plan holds a few numbers per row, never one per window: a thousand rows of 10 000² scenes cost no more
memory than one, and a window is computed when it is asked for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from odeon_job.config import MAX_ITEM_SIDE, DataSource
from odeon_job.data.grid import Box
from odeon_job.data.raster import RasterInfo, check_same_size, raster_info, same_grid
from odeon_job.data.samples import Sample, Splits
from odeon_job.data.spec import DataSpec
from odeon_job.errors import DataError

log = logging.getLogger("odeon")

#: Scenes' headers are read this many at a time (I/O bound, above all on object storage).
PARALLEL_OPENS = 8
#: Mixed into the random windows' seeds, so that they do not repeat the augmentations' draws.
_WINDOW_STREAM = 0x57494E


@dataclass(frozen=True)
class WindowRead:
    """What one item reads: the CSV row (of the split), the window of its scene, and the part of the window
    whose pixels this item scores (top, left, bottom, right, relative to the window; None: all of it)."""

    row: int
    window: Box | None  # None: the row as the specification reads a tile (all of it, or its CSV window)
    owned: tuple[int, int, int, int] | None = None

    def owned_part(self, array: np.ndarray) -> np.ndarray:
        """The pixels of ``array`` (the window as read, (..., height, width)) that this item scores."""
        if self.owned is None:
            return array
        top, left, bottom, right = self.owned
        return array[..., top:bottom, left:right]

    def ignore_unowned(self, mask: np.ndarray, marker: int) -> tuple[np.ndarray, int]:
        """``mask`` (the window's class indices) with the pixels this item does not score set to ``marker``, and
        how many it scores: the one crop behind the metrics (each pixel of a grid counted once)."""
        if self.owned is None or self.owned == (0, 0, *mask.shape):
            return mask, mask.size
        kept = np.full_like(mask, marker)
        kept[..., self.owned[0] : self.owned[2], self.owned[1] : self.owned[3]] = self.owned_part(mask)
        return kept, self.owned_part(mask).size


class WindowPlan(Protocol):
    def __len__(self) -> int: ...

    def __call__(self, index: int, epoch: int = 0) -> WindowRead: ...

    @property
    def largest(self) -> tuple[int, int]:
        """(height, width) that every window of the plan fits in; (0, 0) for tiles (each has its own size)."""
        ...


def largest_window(regions: np.ndarray, patch: int) -> tuple[int, int]:
    """The largest window of ``patch`` pixels over ``regions``: windows never go past their region, so a split of
    scenes smaller than the patch has smaller windows."""
    return min(patch, int(regions[:, 2].max())), min(patch, int(regions[:, 3].max()))


class WholeRows:
    """Tiles: item i is row i, read whole."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return self.rows

    def __call__(self, index: int, epoch: int = 0) -> WindowRead:
        return WindowRead(index, None)

    @property
    def largest(self) -> tuple[int, int]:
        return 0, 0


def _grid_counts(lengths: np.ndarray, patch: int, stride: int) -> np.ndarray:
    """Windows along an axis of each length: the first at 0, then every ``stride`` until one reaches the end."""
    return 1 + np.maximum(0, -(-(lengths - patch) // stride))


class GridWindows:
    """Validation and test: a grid over each row's region, row-major, the rows one after the other."""

    def __init__(self, regions: np.ndarray, patch: int, overlap: int) -> None:
        self.regions, self.patch, self.overlap, self.stride = regions, patch, overlap, patch - overlap
        self.grid_rows = _grid_counts(regions[:, 2], patch, self.stride)
        self.grid_cols = _grid_counts(regions[:, 3], patch, self.stride)
        self.starts = np.concatenate([[0], np.cumsum(self.grid_rows * self.grid_cols)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def largest(self) -> tuple[int, int]:
        return largest_window(self.regions, self.patch)

    def row_of(self, index: int) -> int:
        return int(np.searchsorted(self.starts, index, side="right") - 1)

    def items_of_row(self, row: int) -> range:
        return range(int(self.starts[row]), int(self.starts[row + 1]))

    def _start(self, i: int, length: int) -> int:
        return min(i * self.stride, max(0, length - self.patch))

    def _axis(self, i: int, length: int, count: int) -> tuple[int, int, int, int]:
        """Start and size of window ``i`` of ``count`` along an axis, and the part it owns (from, to: relative).

        Every window has the patch's size (the last one moved back to end at the edge), so that a window's
        prediction never depends on the windows it is batched with; each owns its pixels up to the middle
        of its overlaps with its neighbours."""
        start = self._start(i, length)
        size = min(self.patch, length)
        own_from = 0 if i == 0 else (start + self._start(i - 1, length) + self.patch) // 2
        own_to = length if i == count - 1 else (self._start(i + 1, length) + start + self.patch) // 2
        return start, size, own_from - start, own_to - start

    def __call__(self, index: int, epoch: int = 0) -> WindowRead:
        if not 0 <= index < len(self):
            raise IndexError(index)
        row = self.row_of(index)
        top, left, height, width = self.regions[row].tolist()
        i, j = divmod(index - int(self.starts[row]), int(self.grid_cols[row]))
        r, h, own_top, own_bottom = self._axis(i, height, int(self.grid_rows[row]))
        c, w, own_left, own_right = self._axis(j, width, int(self.grid_cols[row]))
        return WindowRead(row, (top + r, left + c, h, w), (own_top, own_left, own_bottom, own_right))


class RandomWindows:
    """Training: ``count`` random windows per epoch, their rows drawn in proportion to the regions' areas, or
    ("area") as many windows from each row as its region holds patches. A region smaller than the patch gives
    windows of its own size along that axis."""

    def __init__(self, regions: np.ndarray, patch: int, count: int | str, seed: int) -> None:
        self.regions, self.patch, self.seed = regions, patch, seed % 2**63
        areas = regions[:, 2].astype(np.float64) * regions[:, 3]
        if count == "area":
            per_row = np.ceil(areas / patch**2).astype(np.int64)
            self.starts: np.ndarray | None = np.concatenate([[0], np.cumsum(per_row)])
            self.length = int(self.starts[-1])
        else:
            self.starts, self.length = None, int(count)
            self.cumulative_area = np.cumsum(areas)

    def __len__(self) -> int:
        return self.length

    @property
    def largest(self) -> tuple[int, int]:
        return largest_window(self.regions, self.patch)

    def __call__(self, index: int, epoch: int = 0) -> WindowRead:
        if not 0 <= index < self.length:
            raise IndexError(index)
        # Three 64-bit draws of (seed, epoch, index) (a Generator would cost several times more per window).
        pick, down, across = (
            int(v)
            for v in np.random.SeedSequence([self.seed, epoch, index, _WINDOW_STREAM]).generate_state(
                3, dtype=np.uint64
            )
        )
        if self.starts is not None:
            row = int(np.searchsorted(self.starts, index, side="right") - 1)
        else:
            drawn = pick / 2**64 * self.cumulative_area[-1]
            row = min(int(np.searchsorted(self.cumulative_area, drawn, side="right")), len(self.regions) - 1)
        top, left, height, width = self.regions[row].tolist()
        h, w = min(self.patch, height), min(self.patch, width)
        r, c = down % (height - h + 1), across % (width - w + 1)  # (a bias below 1e-12 for any scene)
        return WindowRead(row, (top + r, left + c, h, w))


# --- the regions: each row's scene, or the window its CSV names, on the split's grid ----------------------


def _check_same_extent(
    image: RasterInfo, mask: RasterInfo, sample: Sample, resolution: tuple[float, float] | None
) -> None:
    """A mask on another grid than its image would pair pixels with the wrong labels: refused, unless
    ``resolution`` resamples both (then they must cover the same ground, to half a pixel)."""
    image_grid, mask_grid = image.grid(resolution), mask.grid(resolution)
    check_same_size(
        (image_grid.height, image_grid.width),
        (mask_grid.height, mask_grid.width),
        sample.image,
        sample.mask,
        sample.origin,
    )
    if not (image.crs and mask.crs):
        return
    if image.crs != mask.crs:
        raise DataError(f"{sample.origin}: image CRS {image.crs} differs from mask CRS {mask.crs}")
    if resolution is None:
        if not same_grid(image.transform, mask.transform):
            raise DataError(
                f"{sample.origin}: mask {sample.mask} is not on the grid of image {sample.image} (another "
                "resolution or origin): set data_source.resolution to resample both, or fix the mask"
            )
        return
    image_bounds, mask_bounds = _bounds(image), _bounds(mask)
    if any(abs(a - b) > 0.5 * min(resolution) for a, b in zip(image_bounds, mask_bounds, strict=True)):
        raise DataError(
            f"{sample.origin}: mask {sample.mask} does not cover the ground of image {sample.image} "
            f"(bounds {_rounded(mask_bounds)} vs {_rounded(image_bounds)})"
        )


def _bounds(info: RasterInfo) -> tuple[float, float, float, float]:
    a, _, c, _, e, f = info.transform
    return c, f, c + a * info.width, f + e * info.height


def _rounded(bounds: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(v, 3) for v in bounds)


def row_region(sample: Sample, image: RasterInfo, resolution: tuple[float, float] | None) -> Box:
    """The part of the row's scene it uses, on the grid of ``resolution``: all of it, or its CSV window."""
    grid = image.grid(resolution)
    problem = grid.window_problem(sample.window, sample.image)
    if problem:
        raise DataError(f"{sample.origin}: {problem}")
    return grid.region(sample.window)


def scene_regions(samples: Sequence[Sample], spec: DataSpec, split: str) -> np.ndarray:
    """(rows, 4) int64 regions of the rows of a split; each scene's header (and its mask's) is read once, however
    many rows name it, and checked: mask and image on the same grid, the CSV window inside the image."""
    resolution = spec.resolution.get(split)
    pairs = list(dict.fromkeys((sample.image, sample.mask) for sample in samples))
    first_row: dict[tuple[str, str], Sample] = {}
    for sample in samples:
        first_row.setdefault((sample.image, sample.mask), sample)

    def header(pair: tuple[str, str]) -> RasterInfo:
        sample = first_row[pair]
        image, mask = raster_info(sample.image, sample.origin), raster_info(sample.mask, sample.origin)
        _check_same_extent(image, mask, sample, resolution)
        return image

    started, last = time.monotonic(), time.monotonic()
    infos: dict[tuple[str, str], RasterInfo] = {}
    with ThreadPoolExecutor(max_workers=PARALLEL_OPENS) as pool:
        for number, (pair, info) in enumerate(zip(pairs, pool.map(header, pairs), strict=True), 1):
            infos[pair] = info
            if time.monotonic() - last > 5:
                last = time.monotonic()
                log.info("scenes: %s: %d/%d headers read", split, number, len(pairs))
    if len(pairs) > 50:
        log.info("scenes: %s: %d scenes' headers read in %.1f s", split, len(pairs), time.monotonic() - started)
    regions = np.empty((len(samples), 4), dtype=np.int64)
    for index, sample in enumerate(samples):
        regions[index] = row_region(sample, infos[(sample.image, sample.mask)], resolution)
    return regions


def plan_windows(splits: Splits, spec: DataSpec, source: DataSource, seed: int) -> dict[str, WindowPlan]:
    """The window plan of every split that has rows."""
    plans: dict[str, WindowPlan] = {}
    for split, samples in splits.items():
        if not samples:
            continue
        patch = source.patch_size  # None exactly when not source.reads_scenes (tiles)
        if patch is None:
            plans[split] = WholeRows(len(samples))
            continue
        regions = scene_regions(samples, spec, split)
        if split == "train":
            plans[split] = RandomWindows(regions, patch, source.train_windows, seed)
        else:
            plans[split] = GridWindows(regions, patch, source.grid_overlap)
    return plans


def describe_plans(plans: dict[str, WindowPlan], source: DataSource) -> str:
    """The windows of each split, in words, for the start-up log."""
    if not source.reads_scenes:
        return ""
    parts = [f"{split} {len(plan)}" for split, plan in plans.items()]
    overlap = f", grids overlapping by {source.grid_overlap} px" if source.grid_overlap else ""
    return (
        f"windows of {source.patch_size}x{source.patch_size} px: "
        + ", ".join(parts)
        + f" (train: random, {'per scene area' if source.train_windows == 'area' else 'in all'}, per epoch"
        + f"{overlap})"
    )


def check_whole_tile(region: Box, sample: Sample) -> None:
    """A tile is read whole and goes through the network in one piece: one too large to is refused, naming the row,
    before anything is allocated for it."""
    height, width = region[2:]
    if max(height, width) > MAX_ITEM_SIDE:
        raise DataError(
            f"{sample.origin}: {sample.image} is {width}x{height} pixels (at the split's resolution), too "
            f"large to read whole as one tile (at most {MAX_ITEM_SIDE} pixels a side go through the "
            "network in one piece): set data_source.patch_size (e.g. 512) to read it in windows"
        )
