"""Tiles per second delivered by the job's DataLoader, against a bare rasterio loop over the same files.

    python bench/loader.py [--tiles 300] [--workers 0 1 2] [--batch 8] [--repeats 3] [--no-s3]

On the demo's tiles (256 x 256 x 3 uint8 image and 5-band one-hot mask, deflate GeoTIFFs), one epoch at a
time, batches of ``--batch``:

- ``odeon``: the job's training DataLoader (SegmentationDataModule: CSV samples, SegmentationDataset,
  rotation90 augmentation, normalisation, mask to class indices, the epoch sampler, persistent workers);
- ``bare``: the limit: a Dataset whose item is ``rasterio.open`` + ``read`` of the image and the mask +
  ``torch.from_numpy``, in a DataLoader with the same batch size and workers.

Both run a warm-up epoch (workers started, files in the page cache), then ``--repeats`` timed epochs;
the median is shown. The S3 rows read the same tiles from moto's server (its own process, on
127.0.0.1) through the job's ``/vsis3/`` path, GDAL's cache cleared before each epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import rasterio
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from odeon_job.config import config_from_dict  # noqa: E402
from odeon_job.data.datamodule import SegmentationDataModule  # noqa: E402
from odeon_job.data.raster import clear_remote_cache  # noqa: E402
from odeon_job.data.samples import Sample, load_splits  # noqa: E402
from odeon_job.data.spec import describe_data  # noqa: E402
from odeon_job.demo import demo_config, write_dataset  # noqa: E402

from s3_bench import moto_with, on_s3  # noqa: E402


class BareDataset(Dataset):
    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        with rasterio.open(sample.image) as image, rasterio.open(sample.mask) as mask:
            return {"image": torch.from_numpy(image.read()), "mask": torch.from_numpy(mask.read())}


def epochs_rate(loader: DataLoader, tiles: int, repeats: int, remote: bool) -> float:
    sampler = getattr(loader, "sampler", None)
    rates = []
    for epoch in range(repeats + 1):  # the first epoch warms up
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if remote:
            clear_remote_cache()
        start = time.perf_counter()
        count = sum(len(batch["image"]) for batch in loader)
        if epoch:
            rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def job_loader(config: Any, workers: int, batch: int) -> tuple[DataLoader, int]:
    splits = load_splits(config.data_source, 0)
    spec = describe_data(config.data_source, splits.train[0])
    module = SegmentationDataModule(splits, spec, config.data_source, batch, workers, seed=0)
    return module.train_dataloader(), len(splits.train)


def bare_loader(config: Any, workers: int, batch: int) -> DataLoader:
    samples = load_splits(config.data_source, 0).train
    return DataLoader(BareDataset(samples), batch_size=batch, num_workers=workers, persistent_workers=workers > 0,
                      shuffle=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=300)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-s3", dest="s3", action="store_false")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        dataset = write_dataset(os.path.join(folder, "data"), n_train=args.tiles, n_val=1, n_test=1)
        local = config_from_dict(demo_config(dataset, os.path.join(folder, "out")))
        with contextlib.ExitStack() as stack:
            remote = None
            if args.s3:
                prefix = stack.enter_context(moto_with(dataset.folder))
                remote = local.model_copy(update={"data_source": on_s3(local.data_source, prefix)})
            report(local, remote, args)


def report(local: Any, remote: Any, args: argparse.Namespace) -> None:
    print(f"{args.tiles} tiles, batch {args.batch}, median of {args.repeats} epochs after a warm-up one, "
          f"{os.cpu_count()} CPUs")
    print("| workers | bare tiles/s | odeon tiles/s | odeon ÷ bare | odeon S3 tiles/s | S3 ÷ local |")
    print("|---:|---:|---:|---:|---:|---:|")
    for workers in args.workers:
        loader, tiles = job_loader(local, workers, args.batch)
        odeon = epochs_rate(loader, tiles, args.repeats, remote=False)
        del loader
        bare = epochs_rate(bare_loader(local, workers, args.batch), tiles, args.repeats, remote=False)
        row = f"| {workers} | {bare:.1f} | {odeon:.1f} | {odeon / bare:.3f} |"
        if remote is not None:
            loader, _ = job_loader(remote, workers, args.batch)
            s3 = epochs_rate(loader, tiles, args.repeats, remote=True)
            del loader
            row += f" {s3:.1f} | {s3 / odeon:.3f} |"
        else:
            row += " - | - |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
