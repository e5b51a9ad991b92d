"""One epoch of a ResNet-18 U-Net on the same tiles: odeon against TorchGeo's SemanticSegmentationTask.

    make bench-torchgeo-env      # once: .venv-torchgeo from requirements/bench-torchgeo.txt
    python bench/peer_torchgeo.py [--tiles 300] [--val 16] [--batch 8] [--workers 2]
                                  [--torchgeo-python .venv-torchgeo/bin/python]

The tiles are the demo's (256 x 256 x 3 uint8 deflate GeoTIFFs in EPSG:2154, side by side on a grid,
as if cut from one mosaic), with single-band class-index masks (5 classes). Each side runs in a process of
its own, in its own environment (TorchGeo is never a dependency of the job):

- odeon: ``odeon_job.run.train`` with model ``resnet18`` (a U-Net on torchvision's ResNet-18), CE loss,
  Adam lr 0.001, batch 8, 2 workers, its CSV dataset and epoch sampler, and a small validation split;
- TorchGeo 0.8.1: ``SemanticSegmentationTask(model="unet", backbone="resnet18", weights=None)`` (smp's U-Net
  on timm's ResNet-18), CE loss, Adam lr 0.001, on ``RasterDataset`` images & masks with a
  ``PreChippedGeoSampler`` (one sample per tile), batch 8, 2 workers, and the same validation tiles
  (its ReduceLROnPlateau needs a validation loss).

Reported: the training epoch's wall time (from its first to its last batch, in a Lightning callback), and
the tiles per second of each side's training DataLoader alone (one pass after a warm-up one).

Setting TorchGeo up fairly: ``images & masks`` adds sliver entries (zero or sub-pixel height or width)
where tiles share an edge; they are dropped (entries under half a tile's area) before
``PreChippedGeoSampler``, which then yields exactly one chip per tile
(``GridGeoSampler(size=256)`` would yield none when a tile's extent is 256 x res minus a rounding error).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def epoch_timer(pl: object) -> object:
    class EpochTimer(pl.Callback):  # type: ignore[name-defined,misc]
        start = end = 0.0

        def on_train_epoch_start(self, trainer: object, module: object) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer: object, module: object) -> None:
            self.end = time.perf_counter()

    return EpochTimer()


def loader_rate(loader: object) -> float:
    for _ in loader:  # warm-up: workers started, files in the page cache
        pass
    start, count = time.perf_counter(), 0
    for batch in loader:
        count += len(batch["image"])
    return count / (time.perf_counter() - start)


# --- the odeon side (the job's environment) ------------------------------------------------------------

def odeon_side(data: str, batch: int, workers: int) -> dict[str, float]:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import pytorch_lightning as pl

    from odeon_job import run
    from odeon_job.config import config_from_dict
    from odeon_job.data.datamodule import SegmentationDataModule
    from odeon_job.data.samples import load_splits
    from odeon_job.data.spec import describe_data

    config = config_from_dict({
        "data_source": {"train_file": os.path.join(data, "train.csv"), "val_file": os.path.join(data, "val.csv"),
                        "mask_bands": [1], "class_labels": ["0", "1", "2", "3", "4"]},
        "train_setup": {"model_name": "resnet18", "epochs": 1, "batch_size": batch, "lr": 0.001},
        "output_setup": {"output_folder": os.path.join(data, "odeon-out"), "name_exp_log": "peer", "progress": 0,
                         "use_tensorboard": False, "use_mlflow": False, "save_top_k": 1},
        "device_setup": {"accelerator": "cpu", "num_workers": workers},
    })
    splits = load_splits(config.data_source, 0)
    spec = describe_data(config.data_source, splits.train[0])
    loader = SegmentationDataModule(splits, spec, config.data_source, batch, workers, seed=0).train_dataloader()
    rate = loader_rate(loader)
    del loader

    timer = epoch_timer(pl)
    original = run.optional_callbacks
    run.optional_callbacks = lambda config: [*original(config), timer]  # type: ignore[assignment]
    run.train(config)
    return {"epoch_s": timer.end - timer.start, "loader_tiles_per_s": rate}


# --- the TorchGeo side (its own environment) -----------------------------------------------------------

def torchgeo_side(data: str, batch: int, workers: int) -> dict[str, float]:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import PreChippedGeoSampler
    from torchgeo.trainers import SemanticSegmentationTask

    class Images(RasterDataset):
        filename_glob = "*.tif"
        is_image = True

    class Masks(RasterDataset):
        filename_glob = "*.tif"
        is_image = False

    def dataset(split: str) -> object:
        both = Images(paths=os.path.join(data, split, "img")) & Masks(paths=os.path.join(data, split, "idx"))
        # The intersection also holds slivers along the edges tiles share (zero or sub-pixel height or width),
        # from which a chip of 0 rows would be read: keep the entries of whole tiles.
        areas = both.index.geometry.area
        both.index = both.index[areas > 0.5 * areas.max()]
        return both

    def loader(split: str, shuffle: bool) -> DataLoader:
        ds = dataset(split)
        return DataLoader(ds, batch_size=batch, sampler=PreChippedGeoSampler(ds, shuffle=shuffle),
                          num_workers=workers, collate_fn=stack_samples, persistent_workers=workers > 0)

    train, val = loader("train", True), loader("val", False)
    rate = loader_rate(train)
    train = loader("train", True)
    task = SemanticSegmentationTask(model="unet", backbone="resnet18", weights=None, in_channels=3, num_classes=5,
                                    loss="ce", lr=0.001)
    timer = epoch_timer(pl)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[timer])
    trainer.fit(task, train_dataloaders=train, val_dataloaders=val)
    return {"epoch_s": timer.end - timer.start, "loader_tiles_per_s": rate}


# --- the comparison ------------------------------------------------------------------------------------

def write_tiles(folder: str, tiles: int, val: int) -> None:
    """The demo's tiles, split into train/ and val/ folders (TorchGeo indexes folders), with index masks."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import numpy as np
    import rasterio

    from odeon_job.demo import write_dataset

    source = os.path.join(folder, "source")
    write_dataset(source, n_train=tiles, n_val=val, n_test=1)
    for split in ("train", "val"):
        rows = []
        for line in open(os.path.join(source, f"{split}.csv")).read().splitlines():
            image, mask = (os.path.join(source, part) for part in line.split(","))
            name = os.path.basename(image)
            for sub in ("img", "idx"):
                os.makedirs(os.path.join(folder, split, sub), exist_ok=True)
            os.replace(image, os.path.join(folder, split, "img", name))
            with rasterio.open(mask) as src:
                profile = {**src.profile, "count": 1}
                classes = src.read().argmax(axis=0).astype(np.uint8)[None]
            with rasterio.open(os.path.join(folder, split, "idx", name), "w", **profile) as dst:
                dst.write(classes)
            rows.append(f"{split}/img/{name},{split}/idx/{name}\n")
        with open(os.path.join(folder, f"{split}.csv"), "w") as stream:
            stream.writelines(rows)


def side(python: str, name: str, data: str, batch: int, workers: int) -> dict[str, float]:
    result = subprocess.run([python, os.path.abspath(__file__), "--side", name, "--data", data, "--batch",
                             str(batch), "--workers", str(workers)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if result.returncode != 0:
        raise SystemExit(f"{name} side failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=300)
    parser.add_argument("--val", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--torchgeo-python", default=os.environ.get("TORCHGEO_PYTHON", ".venv-torchgeo/bin/python"))
    parser.add_argument("--side", choices=["odeon", "torchgeo"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run_side = odeon_side if args.side == "odeon" else torchgeo_side
        print(json.dumps(run_side(args.data, args.batch, args.workers)))
        return
    if not os.path.exists(args.torchgeo_python):
        raise SystemExit(f"{args.torchgeo_python}: no such interpreter; run `make bench-torchgeo-env` first")
    with tempfile.TemporaryDirectory() as folder:
        write_tiles(folder, args.tiles, args.val)
        odeon = side(sys.executable, "odeon", folder, args.batch, args.workers)
        torchgeo = side(args.torchgeo_python, "torchgeo", folder, args.batch, args.workers)
    print(f"{args.tiles} training tiles of 256 x 256 x 3, {args.val} validation tiles, batch {args.batch}, "
          f"{args.workers} workers, {os.cpu_count()} CPUs")
    print("| | odeon | TorchGeo 0.8.1 | odeon ÷ TorchGeo |")
    print("|---|---:|---:|---:|")
    print(f"| training epoch (s) | {odeon['epoch_s']:.1f} | {torchgeo['epoch_s']:.1f} | "
          f"{odeon['epoch_s'] / torchgeo['epoch_s']:.3f} |")
    print(f"| images/s in the epoch | {args.tiles / odeon['epoch_s']:.2f} | {args.tiles / torchgeo['epoch_s']:.2f} | "
          f"{torchgeo['epoch_s'] / odeon['epoch_s']:.2f} |")
    print(f"| loader tiles/s | {odeon['loader_tiles_per_s']:.1f} | {torchgeo['loader_tiles_per_s']:.1f} | "
          f"{odeon['loader_tiles_per_s'] / torchgeo['loader_tiles_per_s']:.2f} |")


if __name__ == "__main__":
    main()
