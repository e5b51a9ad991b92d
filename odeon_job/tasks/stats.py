"""``odeon stats``: the specification's ``normalization_weights`` (per split, the mean and standard deviation
of each image band on the 0-1 scale) and the class frequencies of the training masks, with suggested
``class_imbalance`` weights, computed over every tile (or every pixel of the scenes, in windows that do not
overlap, or a sample of windows spread over them) and printed as JSON to paste into the configuration.

Tiles are read as the training reads them (the same bands, resolution, pixel scale, mask encoding and
ignored pixels: ``SegmentationDataset.read``), one at a time: memory holds one tile and a few sums. Sums
are float64, so millions of tiles lose nothing worth a digit of the result. Every figure is over the pixels
the loss scores: a pixel the mask leaves out (its nodata, or no class on) counts in none.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from odeon_job.config import JobConfig
from odeon_job.data.dataset import SegmentationDataset
from odeon_job.data.masks import ignore_value
from odeon_job.data.samples import Sample, load_splits
from odeon_job.data.spec import DataSpec, describe_data
from odeon_job.data.windows import GridWindows, WholeRows, WindowPlan, scene_regions
from odeon_job.errors import ConfigError

log = logging.getLogger("odeon")

#: Seconds between two progress lines.
PROGRESS_EVERY = 10.0


class BandMoments:
    """Running per-band sums of the pixels on the 0-1 scale, for their mean and (population) standard deviation."""

    def __init__(self, scale: float) -> None:
        self.scale, self.count = scale, 0
        self.total: np.ndarray | None = None
        self.squares: np.ndarray | None = None

    def add(self, image: np.ndarray) -> None:
        values = image.reshape(image.shape[0], -1).astype(np.float64) / self.scale
        total, squares = values.sum(axis=1), (values**2).sum(axis=1)
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares
        self.count += values.shape[1]

    def result(self) -> dict[str, list[float]]:
        if self.total is None or self.squares is None or self.count == 0:
            return {"mean": [], "std": []}
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - mean**2, 0.0))
        return {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]}


def median_frequency_weights(counts: np.ndarray) -> list[float]:
    """Median frequency balancing (Eigen and Fergus 2015): weight c = median frequency / frequency of c, over
    the classes present; a class absent from the training masks gets 0 (it cannot be learnt from them)."""
    total = counts.sum()
    if total == 0:
        return [0.0] * len(counts)
    frequencies = counts / total
    median = float(np.median(frequencies[frequencies > 0]))
    return [round(median / f, 4) if f > 0 else 0.0 for f in frequencies]


def evaluation_plan(samples: Sequence[Sample], spec: DataSpec, split: str, patch_size: int | None) -> WindowPlan:
    """Every pixel of a split once: each tile whole, or each scene in a grid of windows that do not overlap."""
    if patch_size is None:
        return WholeRows(len(samples))
    return GridWindows(scene_regions(samples, spec, split), patch_size, 0)


def chosen_items(total: int, at_most: int | None) -> np.ndarray:
    """All items, or ``at_most`` of them spread evenly over the split (a sample of every scene, not the first)."""
    if at_most is None or at_most >= total:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, at_most).round().astype(np.int64))


def compute_stats(config: JobConfig, max_rows: int | None = None, max_windows: int | None = None) -> dict[str, Any]:
    """The normalization weights of every split and the training masks' class statistics (``max_rows``: the first
    rows of each split only; ``max_windows``: that many windows of scenes per split, spread over them)."""

    source = config.data_source
    if max_windows is not None and not source.reads_scenes:
        raise ConfigError(
            "--windows samples the windows of scenes: set data_source.patch_size too (tiles are read "
            "whole; --rows takes the first rows of each split)"
        )
    splits = load_splits(source, config.train_setup.random_seed)
    spec = describe_data(source, splits.train[0], config.train_setup.per_class_weights)
    weights: dict[str, dict[str, list[float]]] = {}
    counts = np.zeros(spec.n_classes, dtype=np.int64)
    ignored, marker = 0, ignore_value(spec.n_classes)
    unit = f"{source.item_name}s"
    for split, samples in splits.items():
        samples = samples[:max_rows] if max_rows else samples
        if not samples:
            continue
        plan = evaluation_plan(samples, spec, split, source.patch_size)
        dataset, moments = SegmentationDataset(samples, spec, split, windows=plan), BandMoments(spec.pixel_scale)
        items = chosen_items(len(plan), max_windows if source.reads_scenes else None)
        last = time.monotonic()
        for number, index in enumerate(items.tolist(), start=1):
            read = plan(index)
            image, mask = dataset.read(samples[read.row], read.window)
            # Only the pixels this window owns (every pixel of a scene once), and of those only the pixels the loss
            # scores: an image's nodata border, labelled nodata in its mask, would pull the statistics towards it.
            image, mask = read.owned_part(image), read.owned_part(mask)
            scored = mask != marker
            moments.add(image[:, scored])
            if split == "train":
                counts += np.bincount(mask[scored].astype(np.int64), minlength=spec.n_classes)
                ignored += int(mask.size - np.count_nonzero(scored))
            if time.monotonic() - last > PROGRESS_EVERY:
                last = time.monotonic()
                log.info("stats: %s: %d/%d %s", split, number, len(items), unit)
        weights[split] = moments.result()
        log.info("stats: %s: %d %s", split, len(items), unit)
    total = int(counts.sum())
    pixels = {label: int(c) for label, c in zip(spec.class_labels, counts, strict=True)}
    return {
        "normalization_weights": weights,
        "class_frequencies": {label: c / total if total else 0.0 for label, c in pixels.items()},
        "class_pixels": pixels,
        "ignored_pixels": ignored,
        "class_imbalance": median_frequency_weights(counts),
    }


def pasteable(stats: dict[str, Any]) -> dict[str, Any]:
    """The keys to paste into the configuration, in their sections."""
    return {
        "data_source": {"normalization_weights": stats["normalization_weights"]},
        "train_setup": {"class_imbalance": stats["class_imbalance"]},
    }


def describe(stats: dict[str, Any]) -> list[str]:
    """The class frequencies in words, for the console."""
    lines = [
        f"{label}: {share:.2%} of the training pixels ({stats['class_pixels'][label]})"
        for label, share in stats["class_frequencies"].items()
    ]
    if stats["ignored_pixels"]:
        lines.append(f"ignored: {stats['ignored_pixels']} pixels (no class: left out of the frequencies)")
    if any(math.isclose(w, 0.0) for w in stats["class_imbalance"]):
        lines.append("a class absent from the training masks gets the weight 0: it cannot be learnt from them")
    return lines
