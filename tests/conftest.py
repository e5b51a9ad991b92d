"""Fixtures: real GeoTIFFs (CRS and transform) written with rasterio into tmp_path, and configs for them."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from s3_server import TEST_CREDENTIALS, Bucket, CountingProxy, MotoServer, new_bucket

CRS = "EPSG:2154"
ORIGIN = (651_000.0, 6_862_000.0)
PIXEL = 0.2
#: Class colours of the tiny datasets: a network can learn them in a few steps.
COLOURS = np.array([(200, 180, 120), (180, 60, 50), (40, 70, 140), (60, 150, 50), (90, 90, 90)], np.uint8)


def write_tif(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = CRS,
    origin: tuple[float, float] = ORIGIN,
    pixel: float = PIXEL,
    nodata: float | None = None,
) -> str:
    """Write a (bands, H, W) array as a GeoTIFF (declaring ``nodata`` when given); returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype,
        "nodata": nodata,
    }
    if crs is not None:
        profile.update(crs=crs, transform=from_origin(origin[0], origin[1], pixel, pixel))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return str(path)


def class_map(rng: np.random.Generator, size: int, n_classes: int) -> np.ndarray:
    """A (size, size) map of class indices: rectangles of random classes on class 0."""
    classes = np.zeros((size, size), np.uint8)
    for _ in range(4):
        y, x = rng.integers(0, size, 2)
        h, w = rng.integers(size // 6, size // 2, 2)
        classes[y : y + h, x : x + w] = rng.integers(1, n_classes)
    return classes


def onehot(classes: np.ndarray, n_classes: int, on: int = 1) -> np.ndarray:
    return ((classes[None] == np.arange(n_classes)[:, None, None]) * on).astype(np.uint8)


def paint(classes: np.ndarray, rng: np.random.Generator, bands: int = 3) -> np.ndarray:
    """A uint8 image whose colour tells the class, plus noise; extra bands repeat the first three."""
    image = COLOURS[classes].transpose(2, 0, 1).astype(np.int16)
    image = np.concatenate([image] * (bands // 3 + 1))[:bands]
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


@dataclass
class TinyDataset:
    folder: Path
    csv: str
    classes: list[np.ndarray]  # the class map of each row
    images: list[str]
    masks: list[str]


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., TinyDataset]:
    """``make_dataset(n=8, size=32, bands=3, n_classes=3, encoding="one_hot", name="ds")``."""

    def make(
        n: int = 8,
        size: int = 32,
        bands: int = 3,
        n_classes: int = 3,
        encoding: str = "one_hot",
        name: str = "ds",
        seed: int = 0,
    ) -> TinyDataset:
        rng = np.random.default_rng(seed)
        folder = tmp_path / name
        rows, maps, images, masks = [], [], [], []
        for i in range(n):
            classes = class_map(rng, size, n_classes)
            mask = onehot(classes, n_classes) if encoding == "one_hot" else classes[None]
            origin = (ORIGIN[0] + i * size * PIXEL, ORIGIN[1])
            images.append(write_tif(folder / "img" / f"{i}.tif", paint(classes, rng, bands), origin=origin))
            masks.append(write_tif(folder / "msk" / f"{i}.tif", mask, origin=origin))
            rows.append(f"img/{i}.tif,msk/{i}.tif")
            maps.append(classes)
        csv = folder / "samples.csv"
        csv.write_text("\n".join(rows) + "\n")
        return TinyDataset(folder, str(csv), maps, images, masks)

    return make


def split_csvs(make_dataset: Callable[..., TinyDataset], root: Path, n: int = 4) -> None:
    """``root/data/train.csv``, ``val.csv`` and ``test.csv`` (``n`` tiles each, 3 bands, 3 classes), their rows
    relative to ``root/data``: the layout the README and examples/ use."""
    for split, seed in (("train", 0), ("val", 1), ("test", 2)):
        data = make_dataset(n=n, name=f"data/{split}", seed=seed)
        pairs = (row.split(",") for row in Path(data.csv).read_text().split())
        lines = (f"{split}/{image},{split}/{mask}\n" for image, mask in pairs)
        (root / "data" / f"{split}.csv").write_text("".join(lines))


def write_scene(
    path: Path, data: np.ndarray, block: int = 128, *, origin: tuple[float, float] = ORIGIN, pixel: float = PIXEL
) -> str:
    """Write a (bands, H, W) array as a tiled, deflate GeoTIFF with ``block``-pixel blocks (a COG's layout
    without the overviews); returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=CRS,
        transform=from_origin(origin[0], origin[1], pixel, pixel),
        tiled=True,
        blockxsize=block,
        blockysize=block,
        compress="deflate",
    ) as dst:
        dst.write(data)
    return str(path)


def scene_class_map(rng: np.random.Generator, height: int, width: int, n_classes: int) -> np.ndarray:
    """A (height, width) map of class indices: rectangles of random classes on class 0, all over the scene."""
    classes = np.zeros((height, width), np.uint8)
    for _ in range(max(4, height * width // 4096)):
        y, x = rng.integers(0, height), rng.integers(0, width)
        h, w = rng.integers(8, 48, 2)
        classes[y : y + h, x : x + w] = rng.integers(1, n_classes)
    return classes


@dataclass
class Scenes:
    folder: Path
    csv: str
    classes: list[np.ndarray]
    images: list[np.ndarray]
    image_paths: list[str]
    mask_paths: list[str]


@pytest.fixture
def make_scenes(tmp_path: Path) -> Callable[..., Scenes]:
    """``make_scenes(sizes=((384, 320), (256, 448)), block=128, n_classes=3, name="scenes")``: scenes of the given
    (height, width), class-index masks, a CSV of them."""

    def make(
        sizes: tuple[tuple[int, int], ...] = ((384, 320), (256, 448)),
        block: int = 128,
        n_classes: int = 3,
        name: str = "scenes",
        seed: int = 0,
    ) -> Scenes:
        rng = np.random.default_rng(seed)
        folder = tmp_path / name
        rows, maps, images, image_paths, mask_paths = [], [], [], [], []
        for i, (height, width) in enumerate(sizes):
            classes = scene_class_map(rng, height, width, n_classes)
            origin = (ORIGIN[0] + i * 10_000 * PIXEL, ORIGIN[1])
            image = paint(classes, rng)
            image_paths.append(write_scene(folder / "img" / f"scene{i}.tif", image, block, origin=origin))
            mask_paths.append(write_scene(folder / "msk" / f"scene{i}.tif", classes[None], block, origin=origin))
            rows.append(f"img/scene{i}.tif,msk/scene{i}.tif")
            maps.append(classes)
            images.append(image)
        csv = folder / "scenes.csv"
        csv.write_text("\n".join(rows) + "\n")
        return Scenes(folder, str(csv), maps, images, image_paths, mask_paths)

    return make


def stored_checkpoint_dataset(folder: Path) -> str:
    """The 4 tiles of 16 x 16 (3 bands, 3 classes) that tests/data/checkpoint_v1 was trained on; returns the CSV."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        classes = class_map(rng, 16, 3)
        write_tif(folder / f"i{i}.tif", paint(classes, rng))
        write_tif(folder / f"m{i}.tif", onehot(classes, 3))
        rows.append(f"i{i}.tif,m{i}.tif")
    (folder / "samples.csv").write_text("\n".join(rows) + "\n")
    return str(folder / "samples.csv")


def overflowing_dataset(folder: Path) -> str:
    """4 tiles of finite but absurd float pixels (3e38, read with image_max_value 1) that overflow any network:
    the training loss becomes infinite at the first step. Returns the CSV."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        write_tif(folder / f"i{i}.tif", np.full((3, 16, 16), 3e38, np.float32))
        write_tif(folder / f"m{i}.tif", onehot(rng.integers(0, 2, (16, 16)), 2))
        rows.append(f"i{i}.tif,m{i}.tif")
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    return str(folder / "train.csv")


def stored_checkpoint_config(csv: str, output: str, epochs: int, **train_setup: Any) -> dict[str, Any]:
    """The configuration tests/data/checkpoint_v1 was trained with (``epochs`` and ``train_setup`` changed)."""
    return make_config(
        csv,
        output,
        data_source={"val_file": csv},
        train_setup={"epochs": epochs, "deterministic": True, "optimizer_config": {"optimizer": "sgd"}, **train_setup},
        output_setup={"use_tensorboard": False},
    )


def make_config(train_csv: str, output: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """A small, fast configuration dict; ``sections`` entries update the named sections.

    MLflow is off (its store and model logging add seconds to every training); tests/test_mlflow.py
    turns it on."""
    config: dict[str, Any] = {
        "data_source": {"train_file": train_csv, "percentage_val": 0.25},
        "train_setup": {"model_name": "lightunet", "epochs": 1, "batch_size": 2, "lr": 0.01},
        "output_setup": {
            "output_folder": output,
            "name_exp_log": "exp",
            "version_name": "v",
            "progress": 0,
            "use_mlflow": False,
        },
        "device_setup": {"accelerator": "cpu", "num_workers": 0},
    }
    config = copy.deepcopy(config)
    for section, values in sections.items():
        config[section].update(values)
    return config


# --- object storage: a real S3 endpoint on loopback -----------------------------------------------------


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


def use_s3_endpoint(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Point this test's environment (and every process it starts) at ``endpoint`` with test keys."""
    import s3fs

    for name in (
        "AWS_ENDPOINT_URL_S3",
        "AWS_PROFILE",
        "AWS_DEFAULT_REGION",
        "AWS_SESSION_TOKEN",
        "AWS_S3_ENDPOINT",
        "AWS_HTTPS",
        "AWS_VIRTUAL_HOSTING",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**TEST_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # cached clients keep the credentials they were built with


@pytest.fixture
def bucket(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A new, empty bucket, with the environment pointing at its endpoint."""
    use_s3_endpoint(monkeypatch, moto_server.endpoint)
    return new_bucket(moto_server.endpoint)


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[CountingProxy]:
    """A proxy in front of the S3 endpoint that counts bytes and can fail requests (use_s3_endpoint to use it)."""
    counting = CountingProxy(moto_server.port)
    yield counting
    counting.stop()


# --- the quick loop: pytest -m "not slow" ----------------------------------------------------------------

#: Fixtures that mean real data on disk, servers or trainings: a test using one is slow.
SLOW_FIXTURES = {"make_dataset", "make_scenes", "moto_server", "bucket", "proxy", "mlflow_server", "doomed_server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark slow every test that needs data, servers or a training, besides those marked by hand, so that
    ``pytest -m "not slow"`` is a loop of a minute or less (``make test`` runs everything)."""
    for item in items:
        needs_more = item.get_closest_marker("e2e") or item.get_closest_marker("image")
        if needs_more or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
