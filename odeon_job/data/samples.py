"""CSV files of ``image,mask`` rows → samples, and the train/val/test splits.

No raster is opened here: a CSV of any length is read as text only.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from odeon_job import storage
from odeon_job.config import DataSource
from odeon_job.errors import DataError, quote

#: A row's window of its scene, as the CSV lists it: (col_off, row_off, width, height) in the image's pixels.
RowWindow = tuple[int, int, int, int]
#: The columns a row may add after image and mask to name a window of its scene.
WINDOW_COLUMNS = ("col_off", "row_off", "width", "height")


@dataclass(frozen=True)
class Sample:
    """One image/mask pair and where it was listed, so errors can name the CSV row."""

    image: str
    mask: str
    origin: str  # "<csv url> row <n>"
    #: The part of the scene the row uses (None: all of it).
    window: RowWindow | None = None


class SampleList(Sequence[Sample]):
    """The rows of one CSV as two columns of paths as written; a :class:`Sample` (paths resolved,
    origin named) is made when one is asked for. A CSV of any length costs two strings per row and
    a parse of its text, nothing per row at start-up beyond that."""

    def __init__(
        self,
        csv_url: str,
        images: list[str],
        masks: list[str],
        rows: np.ndarray,
        keep: np.ndarray | None = None,
        windows: np.ndarray | None = None,
    ) -> None:
        self.csv_url, self._images, self._masks, self._rows = csv_url, images, masks, rows
        #: (rows, 4) int64 of col_off, row_off, width, height, -1 where a row names no window; None: no row does.
        self._windows = windows
        self._keep = keep  # indices of the rows this list holds (a split of the CSV), None for all
        self._resolve = storage.resolver(storage.parent(csv_url))

    def __len__(self) -> int:
        return len(self._rows) if self._keep is None else len(self._keep)

    @overload
    def __getitem__(self, index: int) -> Sample: ...
    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...

    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        row = index if self._keep is None else int(self._keep[index])
        window: RowWindow | None = None
        if self._windows is not None and self._windows[row, 0] >= 0:
            col, top, width, height = (int(v) for v in self._windows[row])
            window = (col, top, width, height)
        return Sample(
            self._resolve(self._images[row]),
            self._resolve(self._masks[row]),
            f"{self.csv_url} row {self._rows[row]}",
            window,
        )

    @property
    def has_windows(self) -> bool:
        """Whether some row names a window of its scene."""
        return self._windows is not None

    def subset(self, indices: np.ndarray) -> SampleList:
        """The rows at ``indices`` (of this list), in that order."""
        keep = indices if self._keep is None else self._keep[indices]
        return SampleList(
            self.csv_url, self._images, self._masks, self._rows, np.asarray(keep, dtype=np.int64), self._windows
        )


@dataclass(frozen=True)
class Splits:
    train: Sequence[Sample]
    val: Sequence[Sample]
    test: Sequence[Sample]

    def items(self) -> list[tuple[str, Sequence[Sample]]]:
        return [("train", self.train), ("val", self.val), ("test", self.test)]


def is_header(fields: list[str]) -> bool:
    """A header names its columns: no field of it looks like a path (no '.', '/' or '\\')."""
    return not any(c in field for field in fields for c in "./\\")


#: A whole file of plain ``image,mask`` lines: two non-empty fields on every line, nothing to unquote or
#: strip. Matched in C by one regular expression; anything else goes to the general reader.
_PLAIN_FILE = re.compile(r"(?:[^,\n\r\t \"]+,[^,\n\r\t \"]+\n)*[^,\n\r\t \"]+,[^,\n\r\t \"]+\n?")


def _plain_columns(text: str) -> Columns | None:
    """Images, masks and line numbers of a CSV of plain ``image,mask`` lines (no quotes, spaces, blank
    lines or header: nearly every file), split by C string methods alone: a 100,000-row file in about
    20 ms. None when the file needs the general reader (which also names the line of a bad row)."""
    if not _PLAIN_FILE.fullmatch(text):
        return None
    lines = text[:-1] if text.endswith("\n") else text
    fields = lines.replace("\n", ",").split(",")
    images, masks = fields[0::2], fields[1::2]
    if is_header([images[0], masks[0]]):
        return None
    return images, masks, np.arange(1, len(images) + 1), None


Columns = tuple[list[str], list[str], np.ndarray, np.ndarray | None]


#: A window's columns are pixels of a GeoTIFF, whose sides GDAL counts in 32-bit integers.
WINDOW_LIMIT = 2**31


def window_of(fields: list[str], where: str) -> list[int]:
    """The window columns of a row (col_off, row_off, width, height): whole numbers, offsets >= 0, sizes >= 1, all
    below :data:`WINDOW_LIMIT` (no raster is larger)."""
    values = []
    for name, field in zip(WINDOW_COLUMNS, fields, strict=True):
        try:
            number = float(field)
        except ValueError:
            number = float("nan")
        least = 1 if name in ("width", "height") else 0
        if not (math.isfinite(number) and number == int(number) and least <= number < WINDOW_LIMIT):
            raise DataError(
                f"{where}: {name} must be a whole number from {least} to {WINDOW_LIMIT - 1} (pixels of the "
                f"image), got {quote(field, 40)}"
            )
        values.append(int(number))
    return values


def _csv_columns(csv_url: str, text: str) -> Columns:
    """Images, masks, line numbers and windows of any CSV: quotes, spaces around fields, blank lines, a
    header, and any line ending (a spreadsheet may save lone ``\\r``). A row is ``image,mask`` or
    ``image,mask,col_off,row_off,width,height``."""
    reader = csv.reader(io.StringIO(text, newline=None))
    images, masks, rows, windows = [], [], [], []
    first = True
    line = 0
    try:
        for fields in reader:
            fields = [field.strip() for field in fields]
            line, start = reader.line_num, line + 1  # a quoted field may span lines: the row starts at `start`
            if not any(fields):
                continue
            if first and is_header(fields):
                first = False
                continue
            first = False
            if len(fields) not in (2, 6) or not all(fields):
                raise DataError(
                    f"{csv_url} row {start}: expected 'image,mask', got {len(fields)} field(s): "
                    f"{quote(','.join(fields), 120)}{_separator_hint(fields)} (a row may add a window of "
                    "its scene: image,mask,col_off,row_off,width,height)"
                )
            windows.append(window_of(fields[2:], f"{csv_url} row {start}") if len(fields) == 6 else [-1] * 4)
            images.append(fields[0])
            masks.append(fields[1])
            rows.append(start)
    except csv.Error as error:
        raise DataError(f"{csv_url} row {reader.line_num}: not a CSV row ({error})") from error
    window_array = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
    has_windows = bool(len(window_array)) and bool((window_array[:, 0] >= 0).any())
    return images, masks, np.asarray(rows, dtype=np.int64), window_array if has_windows else None


def _separator_hint(fields: list[str]) -> str:
    """A hint when a one-field row was written with another separator (a spreadsheet's ';' or a tab)."""
    if len(fields) == 1:
        for separator, name in ((";", "';'"), ("\t", "a tab")):
            if separator in fields[0]:
                return f" (fields separated by {name}: save the CSV with ',' between image and mask)"
    return ""


def parse_rows(csv_url: str, text: str) -> Columns:
    """Images, masks, the line number and the window of each row of the CSV text ``text`` (read from
    ``csv_url``); windows are None when no row names one."""
    return _plain_columns(text) or _csv_columns(csv_url, text)


def read_samples(csv_url: str) -> SampleList:
    """The samples of a CSV: rows ``image,mask``, a header row tolerated, blank lines ignored.

    Relative paths are relative to the CSV's own folder (or URL prefix).
    """
    images, masks, rows, windows = parse_rows(csv_url, storage.read_text(csv_url))
    if not images:
        raise DataError(f"{csv_url}: no samples (the file lists no image,mask rows)")
    return SampleList(csv_url, images, masks, rows, windows=windows)


def split_train_val(samples: SampleList, fraction: float, seed: int) -> tuple[SampleList, SampleList]:
    """Hold out ``fraction`` of ``samples`` for validation, the same way for the same seed.

    Both parts get at least one sample; the order within each part follows the CSV.
    """
    if len(samples) < 2:
        raise DataError(
            f"{samples[0].origin}: cannot split a single sample into train and validation; "
            "give data_source.val_file or more rows"
        )
    n_val = min(max(1, round(len(samples) * fraction)), len(samples) - 1)
    order = np.random.default_rng(seed).permutation(len(samples))
    held_out = np.zeros(len(samples), dtype=bool)
    held_out[order[:n_val]] = True
    return samples.subset(np.flatnonzero(~held_out)), samples.subset(np.flatnonzero(held_out))


def load_splits(source: DataSource, seed: int) -> Splits:
    """Read the CSVs of the configuration; without ``val_file``, split the train CSV."""
    train = read_samples(source.train_file)
    if source.val_file:
        val = read_samples(source.val_file)
    else:
        train, val = split_train_val(train, source.percentage_val, seed)
    test: Sequence[Sample] = read_samples(source.test_file) if source.test_file else []
    return Splits(train=train, val=val, test=test)
