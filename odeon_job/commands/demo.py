"""``odeon demo``: a small, learnable, georeferenced dataset, its CSVs and config, then a training.

Tiles are 3-band uint8 GeoTIFFs in Lambert-93 (EPSG:2154) at 0.2 m, masks one-hot (one band per
class). Each class is drawn as shapes with its own colour and texture, then the whole tile gets
noise and a brightness change, so the task is easy to learn but not trivial.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin

CLASS_LABELS = ("sol_nu", "batiment", "surface_eau", "vegetation", "route")
#: The classes' colours on maps and figures (Okabe & Ito's where they fit: told apart by colour-blind readers).
CLASS_COLORS = ("#d9b77e", "#d55e00", "#0072b2", "#009e73", "#6e6e6e")
#: Mean colour (R, G, B) and texture amplitude of each class.
_COLOURS = np.array([(170, 140, 100), (185, 75, 60), (45, 75, 125), (70, 125, 55), (95, 95, 100)], np.float32)
_TEXTURE = np.array([12, 6, 3, 22, 5], np.float32)
CRS = "EPSG:2154"
PIXEL_SIZE = 0.2
ORIGIN = (651_000.0, 6_862_000.0)  # Paris, in Lambert-93


@dataclass(frozen=True)
class DemoDataset:
    folder: str
    train_csv: str
    val_csv: str
    test_csv: str
    #: Fraction of training and of validation pixels in each class.
    train_class_frequencies: tuple[float, ...]
    val_class_frequencies: tuple[float, ...]
    #: Per band mean and standard deviation of the training images, scaled to 0-1.
    train_mean: tuple[float, ...]
    train_std: tuple[float, ...]

    @property
    def class_weights(self) -> list[float]:
        """``class_imbalance`` weights: 1 / sqrt(frequency), scaled to a mean of 1 (rare classes count more)."""
        weights = np.array(self.train_class_frequencies) ** -0.5
        return [round(float(w), 2) for w in weights / weights.mean()]

    @property
    def majority_miou(self) -> float:
        """The validation mIoU of predicting the most frequent class everywhere."""
        present = [f for f in self.val_class_frequencies if f > 0]
        return max(present) / len(present)


def _grid(size: int) -> np.ndarray:
    """(2, size, size) float32: the row and the column of every pixel."""
    return np.mgrid[0:size, 0:size].astype(np.float32)


def _draw_classes(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size) map of class indices: soil, then vegetation, water, roads and buildings on top."""
    rows, cols = _grid(size)
    scale = size / 256
    classes = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 4)):  # vegetation: clusters of discs
        cy, cx = rng.uniform(0, size, 2)
        for _ in range(rng.integers(3, 7)):
            y, x = cy + rng.normal(0, 25 * scale), cx + rng.normal(0, 25 * scale)
            radius = rng.uniform(10, 28) * scale
            classes[(rows - y) ** 2 + (cols - x) ** 2 < radius**2] = 3
    for _ in range(rng.integers(0, 3)):  # water: rotated ellipses
        y, x = rng.uniform(0, size, 2)
        a, b = rng.uniform(15, 45, 2) * scale
        angle = rng.uniform(0, np.pi)
        u = (cols - x) * np.cos(angle) + (rows - y) * np.sin(angle)
        v = -(cols - x) * np.sin(angle) + (rows - y) * np.cos(angle)
        classes[(u / a) ** 2 + (v / b) ** 2 < 1] = 2
    for _ in range(rng.integers(1, 3)):  # roads: straight bands across the tile
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(-0.3, 0.3) * size
        distance = (cols - size / 2) * np.sin(angle) - (rows - size / 2) * np.cos(angle) - offset
        classes[np.abs(distance) < rng.uniform(4, 8) * scale] = 4
    for _ in range(rng.integers(2, 7)):  # buildings: rectangles
        y, x = rng.uniform(0, size, 2)
        h, w = rng.uniform(12, 40, 2) * scale
        classes[(np.abs(rows - y) < h / 2) & (np.abs(cols - x) < w / 2)] = 1
    return classes


def _paint(rng: np.random.Generator, classes: np.ndarray) -> np.ndarray:
    """A (3, H, W) uint8 image of ``classes``: class colours and textures, noise, brightness."""
    size = classes.shape[0]
    image = _COLOURS[classes].transpose(2, 0, 1).copy()
    texture = rng.normal(0, 1, (size, size)).astype(np.float32) * _TEXTURE[classes]
    coarse = np.kron(rng.normal(0, 1, (size // 16 + 1, size // 16 + 1)), np.ones((16, 16)))[:size, :size]
    image += texture + (coarse * 8 * (classes == 0)).astype(np.float32)  # mottled soil
    roof_shade = (np.arange(size)[None, :] % 24 < 12) * (classes == 1) * 20.0  # roof slopes
    image -= roof_shade.astype(np.float32)
    image *= rng.uniform(0.85, 1.15)
    image += rng.normal(0, 8, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_tile(path: str, data: np.ndarray, column: int, row: int, size: int) -> None:
    transform = from_origin(
        ORIGIN[0] + column * size * PIXEL_SIZE, ORIGIN[1] - row * size * PIXEL_SIZE, PIXEL_SIZE, PIXEL_SIZE
    )
    block = 256 if size % 256 == 0 else 16 * max(1, min(size, 256) // 16)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=data.shape[0],
        dtype=data.dtype,
        crs=CRS,
        transform=transform,
        tiled=True,
        blockxsize=block,
        blockysize=block,
        compress="deflate",
    ) as dst:
        dst.write(data)


def write_dataset(
    folder: str, n_train: int = 64, n_val: int = 16, n_test: int = 16, size: int = 256, seed: int = 0
) -> DemoDataset:
    """Write the tiles and the train/val/test CSVs (relative paths) under ``folder``."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "img"), exist_ok=True)
    os.makedirs(os.path.join(folder, "msk"), exist_ok=True)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    per_row = 8
    val_pixels, train_pixels = np.zeros(len(CLASS_LABELS)), np.zeros(len(CLASS_LABELS))
    band_sum, band_sq, band_n = np.zeros(3), np.zeros(3), 0
    index = 0
    for split, count in counts.items():
        lines = []
        for _ in range(count):
            classes = _draw_classes(rng, size)
            image = _paint(rng, classes)
            onehot = (classes[None] == np.arange(len(CLASS_LABELS))[:, None, None]).astype(np.uint8)
            name = f"tile_{index:04d}.tif"
            _write_tile(os.path.join(folder, "img", name), image, index % per_row, index // per_row, size)
            _write_tile(os.path.join(folder, "msk", name), onehot, index % per_row, index // per_row, size)
            lines.append(f"img/{name},msk/{name}\n")
            if split == "val":
                val_pixels += np.bincount(classes.ravel(), minlength=len(CLASS_LABELS))
            if split == "train":
                train_pixels += np.bincount(classes.ravel(), minlength=len(CLASS_LABELS))
                scaled = image.reshape(3, -1) / 255.0
                band_sum, band_sq = band_sum + scaled.sum(1), band_sq + (scaled**2).sum(1)
                band_n += scaled.shape[1]
            index += 1
        with open(os.path.join(folder, f"{split}.csv"), "w") as stream:
            stream.writelines(lines)
    mean = band_sum / band_n
    std = np.sqrt(band_sq / band_n - mean**2)
    return DemoDataset(
        folder=folder,
        train_csv=os.path.join(folder, "train.csv"),
        val_csv=os.path.join(folder, "val.csv"),
        test_csv=os.path.join(folder, "test.csv"),
        train_class_frequencies=tuple(float(f) for f in train_pixels / train_pixels.sum()),
        val_class_frequencies=tuple(float(f) for f in val_pixels / val_pixels.sum()),
        train_mean=tuple(float(m) for m in mean),
        train_std=tuple(float(s) for s in std),
    )


def demo_config(dataset: DemoDataset, output_folder: str, epochs: int = 15) -> dict[str, Any]:
    """A configuration for the demo dataset that trains in a few minutes on two CPU cores.

    Small batches at a moderate rate: lightunet has no batch norm, so it needs many small steps (at
    lr 0.005 it stalls on the majority class for epochs). Soil covers three quarters of the pixels:
    class weights from the class frequencies keep the rare classes (buildings: 4 %) from being learnt
    last, or not at all within 15 epochs."""
    return {
        "data_source": {
            "train_file": os.path.abspath(dataset.train_csv),
            "val_file": os.path.abspath(dataset.val_csv),
            "test_file": os.path.abspath(dataset.test_csv),
            "image_bands": [1, 2, 3],
            "mask_bands": list(range(1, len(CLASS_LABELS) + 1)),
            "class_labels": list(CLASS_LABELS),
            "class_colors": list(CLASS_COLORS),
            # val and test fall back to the train statistics
            "normalization_weights": {
                "train": {
                    "mean": [round(m, 5) for m in dataset.train_mean],
                    "std": [round(s, 5) for s in dataset.train_std],
                }
            },
            "data_augmentation": {"train": ["rotation90"], "val": [], "test": []},
        },
        "train_setup": {
            "model_name": "lightunet",
            "epochs": epochs,
            "batch_size": 4,
            "lr": 0.002,
            "loss": "ce",
            "class_imbalance": dataset.class_weights,
            "optimizer_config": {"optimizer": "adam"},
            "random_seed": 42,
        },
        "output_setup": {
            "output_folder": os.path.abspath(output_folder),
            "name_exp_log": "demo",
            "progress_every": 10,  # (a line every 10 s where no terminal shows the bar)
            # the test report: a class map and an error map per test tile, scenes.csv, figures/
            "get_prediction": True,
            "prediction_output_type": "class",
        },
        "device_setup": {"accelerator": "cpu", "num_workers": 2},
    }


def write_demo(output: str, **dataset_options: Any) -> tuple[DemoDataset, str]:
    """Write the dataset under ``output/data`` and its config as ``output/demo_config.json``."""
    dataset = write_dataset(os.path.join(output, "data"), **dataset_options)
    config_path = os.path.join(output, "demo_config.json")
    with open(config_path, "w") as stream:
        json.dump(demo_config(dataset, os.path.join(output, "runs")), stream, indent=2)
    return dataset, config_path
