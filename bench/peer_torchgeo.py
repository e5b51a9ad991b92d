"""One epoch of a ResNet-18 U-Net on the same tiles: odeon against TorchGeo's SemanticSegmentationTask.

    make bench-torchgeo-env      # once: .venv-torchgeo from requirements/bench-torchgeo.txt
    python bench/peer_torchgeo.py [--tiles 300] [--val 16] [--batch 8] [--workers 2]
                                  [--torchgeo-python .venv-torchgeo/bin/python]
    python bench/peer_torchgeo.py --scene 8192 [--windows 160] [--val-scene 1024]   # on TorchGeo's own ground

The tiles are the demo's (256 x 256 x 3 uint8 deflate GeoTIFFs in EPSG:2154, side by side on a grid,
as if cut from one mosaic), with single-band class-index masks (5 classes). Each side runs in a process of
its own, in its own environment (TorchGeo is never a dependency of the job):

- odeon: ``odeon_job.tasks.train.train`` with model ``resnet18`` (a U-Net on torchvision's ResNet-18), CE loss,
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


def odeon_side(data: str, batch: int, workers: int, windows: int = 0) -> dict[str, float]:
    """The job on the tiles, or (``windows``) on the scenes: random training windows, a grid over the validation
    scene."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import pytorch_lightning as pl

    from odeon_job.config import config_from_dict
    from odeon_job.data.datamodule import SegmentationDataModule
    from odeon_job.data.samples import load_splits
    from odeon_job.data.spec import describe_data
    from odeon_job.data.windows import plan_windows
    from odeon_job.tasks import train as training_task
    from odeon_job.tasks import training_outputs

    read = {"patch_size": 256, "train_windows": windows} if windows else {"mask_bands": [1]}
    config = config_from_dict(
        {
            "data_source": {
                "train_file": os.path.join(data, "train.csv"),
                "val_file": os.path.join(data, "val.csv"),
                "class_labels": ["0", "1", "2", "3", "4"],
                **read,
            },
            "train_setup": {"model_name": "resnet18", "epochs": 1, "batch_size": batch, "lr": 0.001},
            "output_setup": {
                "output_folder": os.path.join(data, "odeon-out"),
                "name_exp_log": "peer",
                "progress": 0,
                "use_tensorboard": False,
                "use_mlflow": False,
                "save_top_k": 1,
            },
            "device_setup": {"accelerator": "cpu", "num_workers": workers},
        }
    )
    splits = load_splits(config.data_source, 0)
    spec = describe_data(config.data_source, splits.train[0])
    plans = plan_windows(splits, spec, config.data_source, 0)
    loader = SegmentationDataModule(
        splits, spec, config.data_source, batch, workers, seed=0, windows=plans
    ).train_dataloader()
    rate = loader_rate(loader)
    del loader

    timer = epoch_timer(pl)
    original = training_outputs.optional_callbacks
    training_outputs.optional_callbacks = lambda config: [*original(config), timer]  # type: ignore[assignment]
    training_task.train(config)
    return {"epoch_s": timer.end - timer.start, "loader_tiles_per_s": rate}


# --- the TorchGeo side (its own environment) -----------------------------------------------------------


def torchgeo_side(data: str, batch: int, workers: int, windows: int = 0) -> dict[str, float]:
    """TorchGeo's RasterDataset images & masks: one chip per tile (PreChippedGeoSampler), or (``windows``) on its
    own ground, RandomGeoSampler(size=256) for training and GridGeoSampler(size=256, stride=256) over the
    validation scene."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler, PreChippedGeoSampler, RandomGeoSampler
    from torchgeo.trainers import SemanticSegmentationTask

    class Images(RasterDataset):
        filename_glob = "*.tif"
        is_image = True

    class Masks(RasterDataset):
        filename_glob = "*.tif"
        is_image = False

    def dataset(split: str) -> object:
        both = Images(paths=os.path.join(data, split, "img")) & Masks(paths=os.path.join(data, split, "idx"))
        if not windows:
            # The intersection also holds slivers along the edges tiles share (zero or sub-pixel height or width),
            # from which a chip of 0 rows would be read: keep the entries of whole tiles.
            areas = both.index.geometry.area
            both.index = both.index[areas > 0.5 * areas.max()]
        return both

    def loader(split: str) -> DataLoader:
        ds = dataset(split)
        if not windows:
            sampler = PreChippedGeoSampler(ds, shuffle=split == "train")
        elif split == "train":
            sampler = RandomGeoSampler(ds, size=256, length=windows)
        else:
            sampler = GridGeoSampler(ds, size=256, stride=256)
        return DataLoader(
            ds,
            batch_size=batch,
            sampler=sampler,
            num_workers=workers,
            collate_fn=stack_samples,
            persistent_workers=workers > 0,
        )

    train, val = loader("train"), loader("val")
    rate = loader_rate(train)
    train = loader("train")
    task = SemanticSegmentationTask(
        model="unet", backbone="resnet18", weights=None, in_channels=3, num_classes=5, loss="ce", lr=0.001
    )
    timer = epoch_timer(pl)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(task, train_dataloaders=train, val_dataloaders=val)
    return {"epoch_s": timer.end - timer.start, "loader_tiles_per_s": rate}


# --- the comparison ------------------------------------------------------------------------------------


def write_tiles(folder: str, tiles: int, val: int) -> None:
    """The demo's tiles, split into train/ and val/ folders (TorchGeo indexes folders), with index masks."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import numpy as np
    import rasterio

    from odeon_job.commands.demo import write_dataset

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


def write_scenes(folder: str, size: int, val_size: int) -> None:
    """A training scene of ``size``² and a validation scene of ``val_size``² (3-band uint8 COGs, deflate, 512²
    blocks, painted by class with noise) with class-index masks, in train/ and val/ folders and their CSVs."""
    import numpy as np
    import rasterio
    import rasterio.shutil

    colours = np.array([(200, 180, 120), (180, 60, 50), (40, 70, 140), (60, 150, 50), (90, 90, 90)], np.uint8)
    rng = np.random.default_rng(0)
    for split, side_length, east in (("train", size, 0.0), ("val", val_size, size * 0.2 + 1000)):
        classes = np.zeros((side_length, side_length), np.uint8)
        for _ in range(side_length * side_length // 20_000):
            y, x = rng.integers(0, side_length, 2)
            h, w = rng.integers(16, 160, 2)
            classes[y : y + h, x : x + w] = rng.integers(1, len(colours))
        image = np.clip(colours[classes].transpose(2, 0, 1) + rng.normal(0, 6, (3, *classes.shape)), 0, 255)
        profile = {
            "driver": "GTiff",
            "width": side_length,
            "height": side_length,
            "dtype": "uint8",
            "crs": "EPSG:2154",
            "transform": rasterio.transform.from_origin(651_000 + east, 6_862_000, 0.2, 0.2),
        }
        for sub, data in (("img", image.astype(np.uint8)), ("idx", classes[None])):
            os.makedirs(os.path.join(folder, split, sub), exist_ok=True)
            plain = os.path.join(folder, f"{split}-{sub}.tif")
            with rasterio.open(plain, "w", count=len(data), **profile) as dst:
                dst.write(data)
            rasterio.shutil.copy(
                plain,
                os.path.join(folder, split, sub, "scene.tif"),
                driver="COG",
                compress="DEFLATE",
                blocksize=512,
                overviews="NONE",
            )
            os.unlink(plain)
        with open(os.path.join(folder, f"{split}.csv"), "w") as stream:
            stream.write(f"{split}/img/scene.tif,{split}/idx/scene.tif\n")


def side(python: str, name: str, data: str, batch: int, workers: int, windows: int = 0) -> dict[str, float]:
    result = subprocess.run(
        [
            python,
            os.path.abspath(__file__),
            "--side",
            name,
            "--data",
            data,
            "--batch",
            str(batch),
            "--workers",
            str(workers),
            "--windows",
            str(windows),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
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
    parser.add_argument(
        "--scene",
        type=int,
        metavar="SIZE",
        help="scenes instead of tiles: a training scene of "
        "SIZE² read in --windows random windows of 256² and a grid over a validation scene",
    )
    parser.add_argument("--windows", type=int, default=160)
    parser.add_argument("--val-scene", type=int, default=1024)
    parser.add_argument(
        "--side", choices=["odeon", "torchgeo", "odeon-scene", "torchgeo-scene"], help=argparse.SUPPRESS
    )
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run_side = odeon_side if args.side.startswith("odeon") else torchgeo_side
        print(json.dumps(run_side(args.data, args.batch, args.workers, args.windows if "scene" in args.side else 0)))
        return
    if not os.path.exists(args.torchgeo_python):
        raise SystemExit(f"{args.torchgeo_python}: no such interpreter; run `make bench-torchgeo-env` first")
    if args.scene:
        scenes_main(args)
        return
    with tempfile.TemporaryDirectory() as folder:
        write_tiles(folder, args.tiles, args.val)
        odeon = side(sys.executable, "odeon", folder, args.batch, args.workers)
        torchgeo = side(args.torchgeo_python, "torchgeo", folder, args.batch, args.workers)
    print(
        f"{args.tiles} training tiles of 256 x 256 x 3, {args.val} validation tiles, batch {args.batch}, "
        f"{args.workers} workers, {os.cpu_count()} CPUs"
    )
    print("| | odeon | TorchGeo 0.8.1 | odeon ÷ TorchGeo |")
    print("|---|---:|---:|---:|")
    print(
        f"| training epoch (s) | {odeon['epoch_s']:.1f} | {torchgeo['epoch_s']:.1f} | "
        f"{odeon['epoch_s'] / torchgeo['epoch_s']:.3f} |"
    )
    print(
        f"| images/s in the epoch | {args.tiles / odeon['epoch_s']:.2f} | {args.tiles / torchgeo['epoch_s']:.2f} | "
        f"{torchgeo['epoch_s'] / odeon['epoch_s']:.2f} |"
    )
    print(
        f"| loader tiles/s | {odeon['loader_tiles_per_s']:.1f} | {torchgeo['loader_tiles_per_s']:.1f} | "
        f"{odeon['loader_tiles_per_s'] / torchgeo['loader_tiles_per_s']:.2f} |"
    )


def scenes_main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        write_scenes(folder, args.scene, args.val_scene)
        odeon = side(sys.executable, "odeon-scene", folder, args.batch, args.workers, args.windows)
        torchgeo = side(args.torchgeo_python, "torchgeo-scene", folder, args.batch, args.workers, args.windows)
    print(
        f"a {args.scene}² training scene, {args.windows} random windows of 256² an epoch; a {args.val_scene}² "
        f"validation scene on a grid; batch {args.batch}, {args.workers} workers, {os.cpu_count()} CPUs"
    )
    print("| | odeon | TorchGeo 0.8.1 | odeon ÷ TorchGeo |")
    print("|---|---:|---:|---:|")
    print(
        f"| training epoch (s) | {odeon['epoch_s']:.1f} | {torchgeo['epoch_s']:.1f} | "
        f"{odeon['epoch_s'] / torchgeo['epoch_s']:.3f} |"
    )
    print(
        f"| loader windows/s | {odeon['loader_tiles_per_s']:.1f} | {torchgeo['loader_tiles_per_s']:.1f} | "
        f"{odeon['loader_tiles_per_s'] / torchgeo['loader_tiles_per_s']:.2f} |"
    )


if __name__ == "__main__":
    main()
