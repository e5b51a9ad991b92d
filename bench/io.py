"""Tiles per second read by the job's data pipeline from local disk and from S3, against an s3fs file object.

    python bench/io.py [--repeats 3] [--workers 0 2] [--tiles 64]

Writes the demo dataset (256 x 256 RGB tiles, one-band masks, deflate GeoTIFFs), uploads it to moto's
S3 server (a process of its own) on 127.0.0.1, then, side by side in one run and for each worker count:

- ``local``: the job's real pipeline (CSV → samples → SegmentationDataset → DataLoader), local files;
- ``s3 /vsis3/``: the same pipeline on the uploaded CSV, rasters streamed by GDAL through ``/vsis3/``
  inside one long-lived ``rasterio.Env`` per worker (what ``odeon train`` does);
- ``s3fs file object``: the slow path the job avoids: ``rasterio.open(s3fs.open(url))`` for the same
  image and mask, in the same DataLoader.

A pass reads every training tile (image and mask) once; GDAL's cache of remote bytes is cleared before
each pass, so every pass streams from the server. Figures are medians of ``--repeats`` passes; the
ratio compares with ``local`` at the same worker count. moto on loopback has no network latency: a
real store adds a round trip per request, which favours the streaming path further (fewer requests).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import rasterio
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from odeon_job.commands.demo import demo_config, write_dataset  # noqa: E402
from odeon_job.config import config_from_dict  # noqa: E402
from odeon_job.data.dataset import SegmentationDataset  # noqa: E402
from odeon_job.data.raster import clear_remote_cache  # noqa: E402
from odeon_job.data.samples import Sample, load_splits  # noqa: E402
from odeon_job.data.spec import describe_data  # noqa: E402

from s3_bench import moto_with, on_s3  # noqa: E402


class FileObjectDataset(Dataset):
    """Each tile opened from an s3fs file object: rasterio then reads through Python, whole objects at a time."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import fsspec

        sample = self.samples[index]
        arrays = []
        for url in (sample.image, sample.mask):
            with fsspec.open(url, "rb") as stream, rasterio.open(stream) as src:
                arrays.append(src.read())
        return {"image": torch.from_numpy(arrays[0].astype(np.float32) / 255), "mask": torch.from_numpy(arrays[1])}


def tiles_per_second(make: Callable[[], Dataset], workers: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        clear_remote_cache()
        dataset = make()
        loader = DataLoader(dataset, batch_size=1, num_workers=workers)
        start = time.perf_counter()
        count = sum(1 for _ in loader)
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--tiles", type=int, default=64, help="training tiles of the demo dataset")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        dataset = write_dataset(os.path.join(folder, "data"), n_train=args.tiles, n_val=4, n_test=4)
        with moto_with(dataset.folder) as prefix:
            local = config_from_dict(demo_config(dataset, os.path.join(folder, "out")))
            run(local, on_s3(local.data_source, prefix), args)


def run(local: Any, remote_source: Any, args: argparse.Namespace) -> None:
    local_splits = load_splits(local.data_source, 0)
    remote_splits = load_splits(remote_source, 0)
    spec = describe_data(local.data_source, local_splits.train[0])
    image_kb = os.path.getsize(local_splits.train[0].image) / 1024
    print(
        f"{len(local_splits.train)} tiles of 256 x 256 (image {image_kb:.0f} KB + mask), median of "
        f"{args.repeats} passes, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs"
    )
    paths: dict[str, Callable[[], Dataset]] = {
        "local": lambda: SegmentationDataset(local_splits.train, spec, "train"),
        "s3 /vsis3/ (the job)": lambda: SegmentationDataset(remote_splits.train, spec, "train"),
        "s3fs file object": lambda: FileObjectDataset(remote_splits.train),
    }
    print(f"| {'path':<22} | workers | tiles/s | ÷ local |")
    print(f"|{'-' * 24}|---------|---------|---------|")
    for workers in args.workers:
        reference = None
        for name, make in paths.items():
            rate = tiles_per_second(make, workers, args.repeats)
            reference = reference or rate
            print(f"| {name:<22} | {workers:>7} | {rate:>7.1f} | {rate / reference:>7.2f} |", flush=True)


if __name__ == "__main__":
    main()
