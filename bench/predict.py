"""``odeon predict`` on one large scene against a bare loop, and its peak memory against the scene's size.

    python bench/predict.py [--size 8192] [--patch 512] [--batch 4] [--workers 2] [--repeats 2]
    python bench/predict.py --memory 4096 16384

The scene: a ``--size``² 3-band uint8 Cloud-Optimized GeoTIFF (deflate, 512² blocks) painted by classes with noise.
The model: lightunet, 3 classes, random weights (speed does not depend on them), as a checkpoint.

- ``odeon``: ``tasks.predict.predict`` (class maps, patch ``--patch``, no overlap, ``--workers`` DataLoader workers),
  in this process, from its call to the COG written;
- ``bare``: the limit: windows of the same grid read with rasterio from a dataset opened once, the same network
  (scaling, forward, softmax, argmax) in ``torch.inference_mode``, each window's classes written straight into a
  tiled GeoTIFF, then copied to a COG, one process, no DataLoader.

Rounds alternate the two; windows/s are medians. ``--memory`` runs ``odeon predict`` in a subprocess per size and
reports its peak resident memory (``ru_maxrss``): a scene is stitched one band of windows at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import rasterio
import rasterio.shutil
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from odeon_job.config import config_from_dict, load_predict_config  # noqa: E402
from odeon_job.data.spec import DataSpec  # noqa: E402
from odeon_job.tasks.predict import predict  # noqa: E402
from odeon_job.training.segmentation_module import SegmentationModule, load_module, module_arguments  # noqa: E402

COLOURS = np.array([(200, 180, 120), (180, 60, 50), (40, 70, 140)], np.uint8)


def write_scene(path: str, size: int) -> None:
    """A size² painted scene, written a band of 512 rows at a time, then made a COG."""
    rng = np.random.default_rng(0)
    tiled = path + ".tiled.tif"
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:2154",
        "transform": from_origin(650_000, 6_860_000, 0.2, 0.2),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    with rasterio.open(tiled, "w", **profile) as dst:
        for top in range(0, size, 512):
            classes = rng.integers(0, 3, (size // 64 + 1,))[np.arange(size) // 64]
            band = COLOURS[np.broadcast_to(classes, (min(512, size - top), size))].transpose(2, 0, 1)
            noise = rng.integers(-12, 13, band.shape)
            dst.write(np.clip(band + noise, 0, 255).astype(np.uint8), window=Window(0, top, size, band.shape[1]))
    rasterio.shutil.copy(tiled, path, driver="COG", compress="DEFLATE", BLOCKSIZE=512, BIGTIFF="IF_SAFER")
    os.unlink(tiled)


def write_model(path: str) -> None:
    config = config_from_dict(
        {
            "data_source": {"train_file": "unused.csv", "class_labels": ["a", "b", "c"], "image_bands": [1, 2, 3]},
            "train_setup": {"model_name": "lightunet"},
            "output_setup": {"output_folder": "unused"},
        }
    ).model_dump(mode="json")
    spec = DataSpec((1, 2, 3), (1, 2, 3), ("a", "b", "c"), "one_hot", None, {"train": None, "val": None, "test": None})
    module = SegmentationModule(**module_arguments(config, spec))
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)


def starts(length: int, patch: int) -> list[int]:
    """The grid's window starts along an axis (the last moved back to end at the edge), as GridWindows makes them."""
    count = 1 + max(0, -(-(length - patch) // patch))
    return [min(i * patch, max(0, length - patch)) for i in range(count)]


def bare(model_path: str, scene: str, output: str, patch: int) -> int:
    module = load_module(model_path)
    windows = 0
    with rasterio.open(scene) as src, torch.inference_mode():
        profile = {
            "driver": "GTiff",
            "width": src.width,
            "height": src.height,
            "count": 1,
            "dtype": "uint8",
            "crs": src.crs,
            "transform": src.transform,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }
        staged = output + ".staged.tif"
        with rasterio.open(staged, "w", **profile) as dst:
            for top in starts(src.height, patch):
                for left in starts(src.width, patch):
                    window = Window(left, top, min(patch, src.width), min(patch, src.height))
                    image = torch.from_numpy(src.read(window=window))[None]
                    logits = module(module.scale_images(image, "test"))
                    classes = module.probabilities(logits).argmax(dim=1)[0].numpy().astype(np.uint8)
                    dst.write(classes[None], window=window)
                    windows += 1
    rasterio.shutil.copy(staged, output, driver="COG", compress="DEFLATE")
    os.unlink(staged)
    return windows


def odeon(model_path: str, scene: str, output: str, patch: int, batch: int, workers: int) -> None:
    options = {"model": model_path, "images": scene, "output": output, "patch_size": patch, "batch_size": batch}
    predict(load_predict_config(None, options, [f"device_setup.num_workers={workers}", "device_setup.accelerator=cpu"]))


def speed(args: argparse.Namespace, folder: str) -> None:
    scene, model = os.path.join(folder, "scene.tif"), os.path.join(folder, "model.ckpt")
    write_scene(scene, args.size)
    write_model(model)
    rates: dict[str, list[float]] = {"bare": [], "odeon": []}
    windows = len(starts(args.size, args.patch)) ** 2
    for round_ in range(args.repeats):
        for name in ("bare", "odeon"):
            output = os.path.join(folder, f"{name}-{round_}")
            started = time.perf_counter()
            if name == "bare":
                bare(model, scene, os.path.join(folder, f"{name}-{round_}.tif"), args.patch)
            else:
                odeon(model, scene, output, args.patch, args.batch, args.workers)
            rates[name].append(windows / (time.perf_counter() - started))
            print(f"round {round_}: {name} {rates[name][-1]:.2f} windows/s", flush=True)
    with (
        rasterio.open(os.path.join(folder, "bare-0.tif")) as a,
        rasterio.open(os.path.join(folder, "odeon-0", "scene.tif")) as b,
    ):
        same = float((a.read() == b.read()).mean())
    bare_rate, odeon_rate = statistics.median(rates["bare"]), statistics.median(rates["odeon"])
    print(
        json.dumps(
            {
                "size": args.size,
                "windows": windows,
                "bare windows/s": round(bare_rate, 2),
                "odeon windows/s": round(odeon_rate, 2),
                "odeon / bare": round(odeon_rate / bare_rate, 3),
                "pixels equal": round(same, 6),
            }
        )
    )


def memory(args: argparse.Namespace, folder: str) -> None:
    model = os.path.join(folder, "model.ckpt")
    write_model(model)
    for size in args.memory:
        scene = os.path.join(folder, f"scene{size}.tif")
        write_scene(scene, size)
        command = [
            sys.executable, "-m", "odeon_job", "predict", "--model", model, "--images", scene,
            "--output", os.path.join(folder, f"maps{size}"), "--patch-size", str(args.patch),
            "--batch-size", str(args.batch), "--num-workers", "0", "--accelerator", "cpu",
        ]  # fmt: skip
        # A fresh parent per size: ru_maxrss of RUSAGE_CHILDREN is the largest child it ever waited for.
        measure = (
            "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        started = time.perf_counter()
        peak = int(
            subprocess.run([sys.executable, "-c", measure, *command], check=True, capture_output=True, text=True).stdout
        )
        print(
            json.dumps(
                {
                    "size": size,
                    "scene MB (raw)": round(3 * size * size / 2**20),
                    "peak RSS MB": round(peak / 1024),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--patch", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory", type=int, nargs="*", help="scene sizes whose peak memory to measure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="odeon-bench-predict-") as folder:
        if args.memory:
            memory(args, folder)
        else:
            speed(args, folder)


if __name__ == "__main__":
    main()
