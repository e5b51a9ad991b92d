"""CSV files of ``image,mask`` rows → samples, and the train/val/test splits.

No raster is opened here: a CSV of any length is read as text only.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from odeon_job import storage
from odeon_job.config import DataSource
from odeon_job.errors import DataError


@dataclass(frozen=True)
class Sample:
    """One image/mask pair and where it was listed, so errors can name the CSV row."""

    image: str
    mask: str
    origin: str  # "<csv url> row <n>"


@dataclass(frozen=True)
class Splits:
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]

    def items(self) -> list[tuple[str, list[Sample]]]:
        return [("train", self.train), ("val", self.val), ("test", self.test)]


def _is_header(fields: list[str]) -> bool:
    """A header names its columns: no field of it looks like a path (no '.', '/' or '\\')."""
    return not any(c in field for field in fields for c in "./\\")


def read_samples(csv_url: str) -> list[Sample]:
    """The samples of a CSV: rows ``image,mask``, a header row tolerated, blank lines ignored.

    Relative paths are relative to the CSV's own folder (or URL prefix).
    """
    text = storage.read_text(csv_url)
    resolve = storage.resolver(storage.parent(csv_url))
    samples: list[Sample] = []
    reader = csv.reader(io.StringIO(text))
    first = True
    for fields in reader:
        fields = [field.strip() for field in fields]
        if not any(fields):
            continue
        row = reader.line_num
        if first and _is_header(fields):
            first = False
            continue
        first = False
        if len(fields) != 2 or not all(fields):
            raise DataError(f"{csv_url} row {row}: expected 'image,mask', got {len(fields)} field(s): "
                            f"{','.join(fields)[:120]!r}")
        samples.append(Sample(resolve(fields[0]), resolve(fields[1]), f"{csv_url} row {row}"))
    if not samples:
        raise DataError(f"{csv_url}: no samples (the file lists no image,mask rows)")
    return samples


def split_train_val(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``fraction`` of ``samples`` for validation, the same way for the same seed.

    Both parts get at least one sample; the order within each part follows the CSV.
    """
    if len(samples) < 2:
        raise DataError(f"{samples[0].origin}: cannot split a single sample into train and validation; "
                        "give data_source.val_file or more rows")
    n_val = min(max(1, round(len(samples) * fraction)), len(samples) - 1)
    order = np.random.default_rng(seed).permutation(len(samples))
    held_out = set(order[:n_val].tolist())
    train = [s for i, s in enumerate(samples) if i not in held_out]
    val = [s for i, s in enumerate(samples) if i in held_out]
    return train, val


def load_splits(source: DataSource, seed: int) -> Splits:
    """Read the CSVs of the configuration; without ``val_file``, split the train CSV."""
    train = read_samples(source.train_file)
    if source.val_file:
        val = read_samples(source.val_file)
    else:
        train, val = split_train_val(train, source.percentage_val, seed)
    test = read_samples(source.test_file) if source.test_file else []
    return Splits(train=train, val=val, test=test)
