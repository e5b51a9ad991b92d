"""A scene's grid at a split's resolution: the one definition of where each pixel the job reads lies.

A raster of ``W x H`` pixels read at ``data_source.resolution`` becomes a grid of ``round(W * res_x /
resolution)`` columns (rows likewise) that covers the file's ground exactly: a grid pixel is
``W / columns`` file pixels wide, the requested resolution to within half a pixel over the whole scene
(517 px at 0.2 m read at 0.3 m: 345 columns of 0.29971 m). Reads (a window of the grid is the same
ground whatever window reads it), the stitched and per-tile predictions (their transform), statistics
and validation all take positions from here, so a pixel is written where it was read.
"""

from __future__ import annotations

from dataclasses import dataclass

from rasterio.transform import Affine

#: (row_off, col_off, height, width) in pixels of a grid.
Box = tuple[int, int, int, int]


def shape_at(
    height: int, width: int, res: tuple[float, float], resolution: tuple[float, float] | None
) -> tuple[int, int]:
    """(height, width) of a raster of pixel size ``res`` once resampled to ``resolution`` (None: as is)."""
    if resolution is None:
        return height, width
    return max(1, round(height * abs(res[1]) / resolution[1])), max(1, round(width * abs(res[0]) / resolution[0]))


@dataclass(frozen=True)
class SceneGrid:
    """The grid of one raster file: its own size and transform, and the grid's shape."""

    #: The file's size in pixels and its affine transform (a, b, c, d, e, f).
    file_height: int
    file_width: int
    file_transform: tuple[float, ...]
    #: The grid's size in pixels.
    height: int
    width: int

    @classmethod
    def of(
        cls,
        height: int,
        width: int,
        transform: tuple[float, ...],
        res: tuple[float, float],
        resolution: tuple[float, float] | None,
    ) -> SceneGrid:
        grid_height, grid_width = shape_at(height, width, res, resolution)
        return cls(height, width, tuple(transform)[:6], grid_height, grid_width)

    @property
    def scale(self) -> tuple[float, float]:
        """File pixels per grid pixel, along x and y."""
        return self.file_width / self.width, self.file_height / self.height

    @property
    def native(self) -> bool:
        """The file's own pixels: read as they are, without resampling."""
        return (self.height, self.width) == (self.file_height, self.file_width)

    @property
    def transform(self) -> Affine:
        """The grid's affine transform (the file's, its pixels scaled to the grid's)."""
        return Affine(*self.file_transform) * Affine.scale(*self.scale)

    def window_transform(self, box: Box) -> Affine:
        """The affine transform of the part ``box`` of the grid (for the file predicting it)."""
        row, col = box[0], box[1]
        return self.transform * Affine.translation(col, row)

    def file_window(self, box: Box) -> tuple[float, float, float, float]:
        """``box`` of the grid in the file's pixels: (col_off, row_off, width, height), fractional when resampled.
        Always inside the file (the grid covers exactly the file's ground)."""
        row, col, height, width = box
        sx, sy = self.scale
        return col * sx, row * sy, width * sx, height * sy

    def region(self, window: tuple[int, int, int, int] | None) -> Box:
        """The grid's part a CSV row uses: all of it, or the file window ``window`` = (col_off, row_off, width,
        height) snapped to the grid's pixels (at least one). The window must lie in the file (checked by
        :meth:`window_problem`)."""
        if window is None:
            return 0, 0, self.height, self.width
        col, row, w, h = window
        sx, sy = self.scale
        top, left = min(round(row / sy), self.height - 1), min(round(col / sx), self.width - 1)
        return top, left, max(1, min(round(h / sy), self.height - top)), max(1, min(round(w / sx), self.width - left))

    def window_problem(self, window: tuple[int, int, int, int] | None, image: str) -> str | None:
        """Why a CSV window cannot be used on this file, the image ``image`` (None: it can)."""
        if window is None:
            return None
        col, row, w, h = window
        if col + w > self.file_width or row + h > self.file_height:
            return (
                f"the window col_off {col}, row_off {row}, width {w}, height {h} goes past the image "
                f"{image} ({self.file_width}x{self.file_height} pixels)"
            )
        return None
