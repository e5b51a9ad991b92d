"""Opening and reading GeoTIFFs with rasterio, by URL, so remote files stream only the bytes needed.

Each process (and thread) reads inside one long-lived ``rasterio.Env``: building a GDAL
environment per open is what makes naive remote reading slow. Datasets are opened where they are
read (inside DataLoader workers), never before a fork, and never shared between threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import glob
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.session import DummySession
from rasterio.windows import Window

from odeon_job import storage
from odeon_job.data.grid import Box, SceneGrid
from odeon_job.errors import DataError, deepest_reason
from odeon_job.storage.retries import count_retries
from odeon_job.storage.s3_settings import gdal_s3_options

#: GDAL options for reading tiles; an environment variable of the same name overrides each.
GDAL_DEFAULTS: dict[str, str | int] = {
    # Do not list a remote "folder" to look for sidecar files on every open.
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # Only these extensions are fetched through /vsicurl/-style paths.
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.vrt,.jp2",
    # Block cache per process, 256 MB, bounded since every DataLoader worker has its own. In bytes: rasterio
    # hands an int to GDALSetCacheMax64 (GDAL's own reading of "256" as MB applies to the environment variable).
    "GDAL_CACHEMAX": 256 * 1024 * 1024,
    # Retry HTTP 429/5xx with exponential backoff (0.5 s, 1 s, 2 s, ... 16 s): a remote read survives
    # a short outage of the store. Each retry is counted (odeon_job.storage.retries).
    "GDAL_HTTP_MAX_RETRY": "6",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
}

#: Added while reading whole tiles (the training data): the first GET of a remote file takes up to 256 KB
#: instead of GDAL's 16 KB, so a tile of up to 256 KB (a 256 x 256 RGB deflate tile is about 180 KB)
#: comes in one request instead of two, and a larger one loses nothing (every byte will be read).
#: Not for metadata-only opens (``odeon validate`` over a whole CSV, the prediction writer's profile).
GDAL_WHOLE_FILE_DEFAULTS: dict[str, str | int] = {"GDAL_INGESTED_BYTES_AT_OPEN": "262144"}

#: Set in the environment (libtiff reads it there, not from GDAL's options) unless already set: a TIFF whose block
#: index lists fewer blocks than its header's size needs is an error at the first read. By default libtiff pads the
#: index with zeros, GDAL reads those blocks as empty (zeros), and a 566-byte file claiming 10^6 x 10^6 pixels
#: trains on zeros. Sparse files written by GDAL list every block (empty ones with offset 0) and still read.
LIBTIFF_ENVIRONMENT = {"LIBTIFF_STRILE_ARRAY_MAX_RESIZE_COUNT": "0"}

_thread = threading.local()
#: The process that last used GDAL here (a fork shows as another pid).
_forked: dict[str, int] = {}


def gdal_options(whole_files: bool = False) -> dict[str, str | int]:
    """:data:`GDAL_DEFAULTS` (and :data:`GDAL_WHOLE_FILE_DEFAULTS` for ``whole_files``) and the S3
    endpoint settings, less what the environment sets itself."""
    chosen = {**GDAL_DEFAULTS, **(GDAL_WHOLE_FILE_DEFAULTS if whole_files else {})}
    defaults = {key: value for key, value in chosen.items() if key not in os.environ}
    return {**defaults, **gdal_s3_options()}


def ensure_gdal_env(whole_files: bool = False) -> None:
    """Enter, once per process and thread, the ``rasterio.Env`` that all of its reads share.

    It is entered again only when the settings change (another S3 endpoint in the environment, or
    whole-file reads after metadata ones: a DataLoader worker only ever does the former).
    """
    options = gdal_options(whole_files)
    # A forked worker inherits the parent's marker: compare the pid too.
    if getattr(_thread, "pid", None) != os.getpid() or _thread.options != options:
        if getattr(_thread, "pid", None) == os.getpid():
            _thread.env.__exit__(None, None, None)
        elif _forked.get("pid") != os.getpid():
            # A DataLoader worker is a fork: it inherited GDAL's open HTTP connections, which its siblings (and
            # the parent) inherited too. Two processes reading responses from one socket read each other's
            # bytes ("CURL error: Invalid status line", or worse): each process starts with connections of its own.
            if _forked:
                clear_remote_cache()
            _forked["pid"] = os.getpid()
        count_retries()
        for name, value in LIBTIFF_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        # A DummySession leaves credentials to GDAL's own chain (environment, profile, IRSA web identity,
        # instance metadata), which renews temporary credentials; rasterio's default AWSSession would
        # copy the credentials of the moment into the Env, and an IRSA token expires within hours.
        env = rasterio.Env(session=DummySession(), **options)
        env.__enter__()
        _thread.env, _thread.pid, _thread.options = env, os.getpid(), options


def clear_remote_cache() -> None:
    """Forget what GDAL cached of remote files (sizes, byte ranges) in this process.

    GDAL keeps serving the old bytes of an object overwritten under the same key, even in a new
    ``rasterio.Env``; rasterio has no binding for ``VSICurlClearCache``, so it is called through the
    GDAL library rasterio loaded. Without it (a GDAL we cannot find) this does nothing.
    """
    library = _gdal_library()
    if library is not None:
        library.VSICurlClearCache()


#: GDAL's CPLErr level of a failure.
_CE_FAILURE = 3


@contextlib.contextmanager
def failures_reported(what: str) -> Iterator[None]:
    """Raise a :class:`RasterioIOError` for a failure GDAL reported during the block but rasterio did not raise:
    a dataset open for writing flushes its last blocks when it is closed, and a disk that fills up then leaves a
    broken file behind a close that returns normally. ``what``: the file, for the message."""
    library = _gdal_library()
    if library is not None:
        library.CPLErrorReset()
    yield
    if library is not None and library.CPLGetLastErrorType() >= _CE_FAILURE:
        reason = (library.CPLGetLastErrorMsg() or b"").decode(errors="replace")
        raise RasterioIOError(f"{what}: {reason}")


def check_written(path: str) -> None:
    """Read back every block of the local file ``path`` just written (a block at a time): GDAL does not always raise
    when a write fails (a full disk during a COG copy left a truncated file behind a copy that returned normally),
    and a broken file must never be published as a result."""
    try:
        with rasterio.open(path) as src:
            for _, window in src.block_windows(1):
                src.read(window=window)
    except RasterioError as error:
        raise RasterioIOError(
            ("no space left on device: " if storage.is_nearly_full(os.path.dirname(path) or ".") else "")
            + "the file written is incomplete ("
            + deepest_reason(error)
            + ")"
        ) from None


@functools.cache
def _gdal_library() -> ctypes.CDLL | None:
    """The GDAL shared library rasterio uses: the wheel's bundled copy, else the system's."""
    bundled = sorted(glob.glob(os.path.join(os.path.dirname(rasterio.__file__) + ".libs", "libgdal*.so*")))
    candidates = bundled or [ctypes.util.find_library("gdal") or ""]
    for candidate in candidates:
        if candidate:
            with contextlib.suppress(OSError, AttributeError):
                library = ctypes.CDLL(candidate)
                library.VSICurlClearCache  # noqa: B018 - the symbol must exist
                library.CPLGetLastErrorType.restype = ctypes.c_int
                library.CPLGetLastErrorMsg.restype = ctypes.c_char_p
                return library
    return None


@dataclass(frozen=True)
class RasterInfo:
    """What ``odeon validate`` and the first-sample check need to know about a raster."""

    width: int
    height: int
    count: int
    dtype: str
    crs: str | None
    transform: tuple[float, ...]
    res: tuple[float, float]
    nodata: float | None = None
    #: (height, width) of the first band's blocks: strips are as wide as the raster.
    block: tuple[int, int] = (1, 1)

    def grid(self, resolution: tuple[float, float] | None) -> SceneGrid:
        """The raster's grid at ``resolution`` (None: its own pixels)."""
        return SceneGrid.of(self.height, self.width, self.transform, self.res, resolution)

    @property
    def striped(self) -> bool:
        """Stored in strips (whole rows): a window reads every column of its rows, not only its own."""
        return self.block[1] >= self.width and self.width > 512


def open_raster(url: str, origin: str, whole_file: bool = False) -> rasterio.io.DatasetReader:
    """Open ``url`` for reading; a failure names the CSV row (``origin``) and the file.

    ``whole_file``: every pixel will be read, so a remote file's first request may take more bytes.
    """
    ensure_gdal_env(whole_file)
    try:
        return rasterio.open(storage.gdal_path(url))
    except RasterioError as error:
        reason = str(error).replace(storage.gdal_path(url), "").strip(" :") or type(error).__name__
        if not storage.is_local(url) or os.path.exists(url):
            raise DataError(f"{origin}: cannot open {url}: {reason}") from error
        raise DataError(f"{origin}: {url} not found") from error


def raster_info(url: str, origin: str) -> RasterInfo:
    with open_raster(url, origin) as src:
        return raster_info_of(src)


def raster_info_of(src: rasterio.io.DatasetReader) -> RasterInfo:
    return RasterInfo(
        width=src.width,
        height=src.height,
        count=src.count,
        dtype=src.dtypes[0],
        crs=src.crs.to_string() if src.crs else None,
        transform=tuple(src.transform)[:6],
        res=(float(src.res[0]), float(src.res[1])),
        nodata=src.nodata,
        block=(int(src.block_shapes[0][0]), int(src.block_shapes[0][1])),
    )


def grid_of(src: rasterio.io.DatasetReader, resolution: tuple[float, float] | None) -> SceneGrid:
    """The grid of an open raster at ``resolution`` (None: its own pixels)."""
    return SceneGrid.of(src.height, src.width, tuple(src.transform), (float(src.res[0]), float(src.res[1])), resolution)


class OpenRasters:
    """Datasets kept open, the most recently used first (an LRU of ``size``): a scene read in windows is opened
    once per DataLoader worker, not once per window (an open of a remote file costs a request or more)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._open: OrderedDict[str, rasterio.io.DatasetReader] = OrderedDict()
        self.opens = 0

    def get(self, url: str, origin: str) -> rasterio.io.DatasetReader:
        src = self._open.pop(url, None)
        if src is None:
            src = open_raster(url, origin)
            self.opens += 1
        self._open[url] = src
        while len(self._open) > self.size:
            self._open.popitem(last=False)[1].close()
        return src

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()


def open_rasters() -> OpenRasters:
    """This process's and thread's :class:`OpenRasters` (a forked DataLoader worker starts with none of the
    parent's: GDAL handles are never shared across processes)."""
    if getattr(_thread, "rasters_pid", None) != os.getpid():
        _thread.rasters, _thread.rasters_pid = OpenRasters(), os.getpid()
    return _thread.rasters


def read_window(
    src: rasterio.io.DatasetReader,
    bands: Sequence[int],
    box: Box,
    grid: SceneGrid,
    origin: str,
    resampling: Resampling = Resampling.nearest,
) -> np.ndarray:
    """Read ``bands`` in ``box`` = (row_off, col_off, height, width) of ``grid`` (``src``'s grid at the split's
    resolution) as a (bands, height, width) array: GDAL fetches only the blocks the window touches."""
    row, col, height, width = box
    try:
        if grid.native:  # the file's own pixels: nothing to resample (rasterio's quickest path)
            return src.read(list(bands), window=Window(col, row, width, height))
        return src.read(
            list(bands),
            window=Window(*grid.file_window(box)),
            out_shape=(len(bands), height, width),
            resampling=resampling,
        )
    except RasterioError as error:
        raise DataError(f"{origin}: cannot read {src.name}: {deepest_reason(error)}") from error


def read_valid(src: rasterio.io.DatasetReader, bands: Sequence[int], box: Box, grid: SceneGrid) -> np.ndarray:
    """(height, width) bool of ``box`` (as :func:`read_window` reads it): False where the image is nodata in every
    one of ``bands`` (its nodata value, or its mask band). A file that declares neither costs no read."""
    row, col, height, width = box
    if all(MaskFlags.all_valid in src.mask_flag_enums[band - 1] for band in bands):
        return np.ones((height, width), dtype=bool)
    if grid.native:
        masks = src.read_masks(list(bands), window=Window(col, row, width, height))
    else:
        masks = src.read_masks(
            list(bands),
            window=Window(*grid.file_window(box)),
            out_shape=(len(bands), height, width),
            resampling=Resampling.nearest,
        )
    return np.asarray(masks.any(axis=0))


def compressed_bytes_touched(src: rasterio.io.DatasetReader, window: tuple[int, int, int, int]) -> int:
    """The stored (compressed) bytes of the blocks that ``window`` = (row_off, col_off, height, width) touches, in
    the file's pixels: what a windowed read has to fetch at the least."""
    row, col, height, width = window
    block_height, block_width = src.block_shapes[0]
    bands = [1] if src.interleaving is None or src.interleaving.value == "PIXEL" else range(1, src.count + 1)
    return sum(
        src.block_size(band, i, j)
        for band in bands
        for i in range(row // block_height, (row + height - 1) // block_height + 1)
        for j in range(col // block_width, (col + width - 1) // block_width + 1)
    )


def same_grid(first: tuple[float, ...], second: tuple[float, ...]) -> bool:
    """Affine transforms (a, b, c, d, e, f) with the same pixel size and rotation (to 1e-6 relative) and
    origins less than 1 % of a pixel apart."""
    a, b, c, d, e, f = first
    size_ok = all(
        abs(x - y) <= 1e-6 * max(abs(x), abs(y), 1e-12)
        for x, y in zip((a, b, d, e), (second[0], second[1], second[3], second[4]), strict=True)
    )
    return size_ok and abs(c - second[2]) <= 0.01 * abs(a) and abs(f - second[5]) <= 0.01 * abs(e)


def check_bands(bands: Sequence[int], count: int, url: str, origin: str, key: str) -> None:
    """Fail with the configuration key to fix when a selected band is not in the file."""
    missing = [band for band in bands if band > count]
    if missing:
        raise DataError(f"{origin}: {url} has {count} band(s); data_source.{key} asks for band {missing[0]}")


def check_same_size(
    image_shape: tuple[int, int], mask_shape: tuple[int, int], image: str, mask: str, origin: str
) -> None:
    """Image and mask must cover the same pixels; shapes are (height, width)."""
    if image_shape != mask_shape:
        raise DataError(
            f"{origin}: image {image} is {image_shape[1]}x{image_shape[0]} pixels but mask {mask} is "
            f"{mask_shape[1]}x{mask_shape[0]}"
        )
