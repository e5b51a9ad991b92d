"""Tiles per second delivered by the job's DataLoader, against a bare rasterio loop over the same files.

    python bench/loader.py [--tiles 300] [--workers 0 1 2] [--batch 8] [--repeats 5] [--no-s3]

On the demo's tiles (256 x 256 x 3 uint8 image and 5-band one-hot mask, deflate GeoTIFFs), one epoch at a
time, batches of ``--batch``:

- ``odeon``: the job's training DataLoader (SegmentationDataModule: CSV samples, SegmentationDataset,
  rotation90 augmentation, mask to class indices, the epoch sampler, persistent workers; images leave
  it as uint8, scaled and normalised later on the training device);
- ``bare``: the limit: a Dataset whose item is ``rasterio.open`` + ``read`` of the image and the mask +
  ``torch.from_numpy``, in a DataLoader with the same batch size and workers;
- ``odeon S3``: the job's DataLoader over the same tiles on moto's S3 server (its own process, on
  127.0.0.1), through the job's ``/vsis3/`` path;
- ``moto alone``: what that server can deliver at all: each file fetched whole in one signed GET
  (``http.client``, one kept-alive connection per process), nothing decoded.

Every loader runs a warm-up epoch (workers started, files in the page cache); then ``--repeats``
rounds, each timing one epoch of every loader in turn, so that the machine's drifts hit them alike.
Rates are medians over the rounds; each ratio is the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import rasterio
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from odeon_job.commands.demo import demo_config, write_dataset  # noqa: E402
from odeon_job.config import config_from_dict  # noqa: E402
from odeon_job.data.datamodule import SegmentationDataModule  # noqa: E402
from odeon_job.data.raster import clear_remote_cache  # noqa: E402
from odeon_job.data.samples import Sample, load_splits  # noqa: E402
from odeon_job.data.spec import describe_data  # noqa: E402

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


class WholeObjects(Dataset):
    """Each tile's two objects fetched whole by presigned URL, one GET each: the server's own limit."""

    def __init__(self, urls: Sequence[tuple[str, str]]) -> None:
        self.urls = urls
        self.connection: tuple[int, http.client.HTTPConnection] | None = None

    def __len__(self) -> int:
        return len(self.urls)

    def _get(self, url: str) -> bytes:
        parts = urllib.parse.urlsplit(url)
        if self.connection is None or self.connection[0] != os.getpid():  # one per worker process
            self.connection = (os.getpid(), http.client.HTTPConnection(parts.netloc))
        connection = self.connection[1]
        connection.request("GET", f"{parts.path}?{parts.query}")
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {parts.path}: HTTP {response.status}")
        return body

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": torch.frombuffer(bytearray(self._get(self.urls[index][0])), dtype=torch.uint8),
            "bytes": len(self._get(self.urls[index][1])),
        }


def paired_ratio(top: Sequence[float], bottom: Sequence[float]) -> float:
    """The median of the rounds' ratios (each pair measured back to back)."""
    return statistics.median(a / b for a, b in zip(top, bottom, strict=True))


def collate_lists(items: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Objects of different lengths: a batch is a list of them."""
    return {"image": [item["image"] for item in items]}


def epoch_rate(loader: DataLoader, epoch: int, remote: bool) -> float:
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if remote:
        clear_remote_cache()  # this process's; each worker's own cache (16 MB) cannot hold an epoch's 110 MB
    start = time.perf_counter()
    count = sum(len(batch["image"]) for batch in loader)
    return count / (time.perf_counter() - start)


def job_loader(config: Any, workers: int, batch: int) -> tuple[DataLoader, int]:
    splits = load_splits(config.data_source, 0)
    spec = describe_data(config.data_source, splits.train[0])
    module = SegmentationDataModule(splits, spec, config.data_source, batch, workers, seed=0)
    return module.train_dataloader(), len(splits.train)


def bare_loader(config: Any, workers: int, batch: int) -> DataLoader:
    samples = load_splits(config.data_source, 0).train
    return DataLoader(
        BareDataset(samples), batch_size=batch, num_workers=workers, persistent_workers=workers > 0, shuffle=True
    )


def whole_objects_loader(config: Any, workers: int, batch: int) -> DataLoader:
    import boto3

    client = boto3.client("s3")

    def presigned(url: str) -> str:
        bucket, key = url.removeprefix("s3://").split("/", 1)
        return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=7200)

    urls = [(presigned(s.image), presigned(s.mask)) for s in load_splits(config.data_source, 0).train]
    return DataLoader(
        WholeObjects(urls),
        batch_size=batch,
        num_workers=workers,
        persistent_workers=workers > 0,
        shuffle=True,
        collate_fn=collate_lists,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=300)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
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
    print(f"{args.tiles} tiles, batch {args.batch}, {args.repeats} rounds after a warm-up epoch, {os.cpu_count()} CPUs")
    print(
        "| workers | bare tiles/s | odeon tiles/s | odeon ÷ bare | odeon S3 tiles/s | S3 ÷ local "
        "| moto alone tiles/s | S3 ÷ moto alone |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for workers in args.workers:
        loaders = {"bare": bare_loader(local, workers, args.batch), "odeon": job_loader(local, workers, args.batch)[0]}
        if remote is not None:
            loaders["s3"] = job_loader(remote, workers, args.batch)[0]
            loaders["moto"] = whole_objects_loader(remote, workers, args.batch)
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        for epoch in range(args.repeats + 1):  # the first round warms up
            for name, loader in loaders.items():
                rate = epoch_rate(loader, epoch, remote=name == "s3")
                if epoch:
                    rates[name].append(rate)
        median = {name: statistics.median(values) for name, values in rates.items()}
        row = (
            f"| {workers} | {median['bare']:.1f} | {median['odeon']:.1f} "
            f"| {paired_ratio(rates['odeon'], rates['bare']):.3f} |"
        )
        if remote is not None:
            row += (
                f" {median['s3']:.1f} | {paired_ratio(rates['s3'], rates['odeon']):.3f} | {median['moto']:.1f} "
                f"| {paired_ratio(rates['s3'], rates['moto']):.3f} |"
            )
        else:
            row += " - | - | - | - |"
        print(row, flush=True)
        del loaders


if __name__ == "__main__":
    main()
