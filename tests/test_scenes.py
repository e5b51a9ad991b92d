"""Scenes read in windows (data_source.patch_size): reads equal to the scene's pixels, the checks at start,
open handles kept, predictions stitched into one GeoTIFF per scene, trainings locally, on S3 (bytes fetched
counted at the server) and on two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from odeon_job.config import config_from_dict
from odeon_job.data import raster
from odeon_job.data.dataset import SegmentationDataset
from odeon_job.data.samples import load_splits, read_samples
from odeon_job.data.spec import describe_data
from odeon_job.data.windows import GridWindows, plan_windows
from odeon_job.errors import DataError
from odeon_job.outputs.callbacks.stitching import Mosaic
from odeon_job.outputs.prediction_files import Legend
from odeon_job.tasks.preflight import check_before_training

from conftest import CRS, ORIGIN, PIXEL, Scenes, make_config, write_scene
from s3_server import Bucket, CountingProxy


def _datasets(config: dict) -> dict[str, SegmentationDataset]:
    job = config_from_dict(config)
    splits = load_splits(job.data_source, 42)
    spec = describe_data(job.data_source, splits.train[0])
    plans = plan_windows(splits, spec, job.data_source, 42)
    return {
        split: SegmentationDataset(samples, spec, split, windows=plans[split], seed=42)
        for split, samples in splits.items()
        if samples
    }


def _scene_config(scenes: Scenes, output: str = "out", **data_source: object) -> dict:
    return make_config(
        scenes.csv,
        output,
        data_source={"val_file": scenes.csv, "patch_size": 128, "class_labels": ["a", "b", "c"], **data_source},
    )


def test_grid_windows_put_together_are_the_scene_and_each_pixel_is_scored_once(
    make_scenes: Callable[..., Scenes],
) -> None:
    scenes = make_scenes()
    dataset = _datasets(_scene_config(scenes, grid_overlap=32))["val"]
    assert isinstance(dataset.windows, GridWindows)
    for row, (classes, image) in enumerate(zip(scenes.classes, scenes.images, strict=True)):
        built = np.zeros_like(image)
        scored = np.zeros(classes.shape, np.int64)
        for index in dataset.windows.items_of_row(row):
            item, read = dataset[index], dataset.windows(index)
            r, c, h, w = read.window
            built[:, r : r + h, c : c + w] = item["image"].numpy()
            mask = item["mask"].numpy()
            scored[r : r + h, c : c + w] += mask != 255
            assert np.array_equal(mask[mask != 255], classes[r : r + h, c : c + w][mask != 255])
            assert item["owned"] == int((mask != 255).sum())
        assert np.array_equal(built, image)
        assert (scored == 1).all()


def test_training_windows_are_the_scene_s_pixels_and_the_same_for_the_same_epoch(
    make_scenes: Callable[..., Scenes],
) -> None:
    scenes = make_scenes()
    dataset = _datasets(_scene_config(scenes, train_windows=12))["train"]
    assert len(dataset) == 12
    opens = raster.open_rasters().opens
    for index in range(12):
        read = dataset.windows(index, 3)
        r, c, h, w = read.window
        item = dataset[(index, 3)]
        assert (h, w) == (128, 128)
        assert np.array_equal(item["image"].numpy(), scenes.images[read.row][:, r : r + h, c : c + w])
        assert np.array_equal(item["mask"].numpy(), scenes.classes[read.row][r : r + h, c : c + w])
    assert raster.open_rasters().opens - opens == 4  # two scenes and their masks, opened once each in this process


def test_scenes_at_another_resolution_are_read_resampled_on_one_grid(make_scenes: Callable[..., Scenes]) -> None:
    scenes = make_scenes()
    dataset = _datasets(_scene_config(scenes, resolution=2 * PIXEL))["val"]
    assert [tuple(region) for region in dataset.windows.regions] == [(0, 0, 192, 160), (0, 0, 128, 224)]
    wholes = []
    for path, (_, _, height, width) in zip(scenes.mask_paths, dataset.windows.regions, strict=True):
        with rasterio.open(path) as src:  # the whole scene resampled at once, as a tile is read
            wholes.append(src.read(1, out_shape=(int(height), int(width)), resampling=Resampling.nearest))
    for index in range(len(dataset)):
        read = dataset.windows(index)
        r, c, h, w = read.window
        mask, whole = dataset[index]["mask"].numpy(), wholes[read.row][r : r + h, c : c + w]
        assert np.array_equal(mask[mask != 255], whole[mask != 255])  # the pixels the window owns
        assert (mask != 255).sum() == dataset[index]["owned"] > 0


def test_a_mask_on_another_grid_and_a_window_past_its_image_are_refused_with_the_row(
    make_scenes: Callable[..., Scenes], tmp_path: Path
) -> None:
    scenes = make_scenes()
    shifted = write_scene(tmp_path / "shifted.tif", scenes.classes[0][None], origin=(ORIGIN[0] + 10 * PIXEL, ORIGIN[1]))
    csv = tmp_path / "bad.csv"
    csv.write_text(f"{scenes.image_paths[0]},{shifted}\n")
    with pytest.raises(DataError, match=r"bad\.csv row 1: mask .*shifted\.tif is not on the grid of image"):
        check_before_training(config_from_dict(_scene_config(scenes, train_file=str(csv))))
    coarse = tmp_path / "coarse.tif"
    with rasterio.open(
        coarse,
        "w",
        driver="GTiff",
        width=160,
        height=192,
        count=1,
        dtype="uint8",
        crs=CRS,
        transform=from_origin(*ORIGIN, 2 * PIXEL, 2 * PIXEL),
    ) as dst:
        dst.write(scenes.classes[0][None, ::2, ::2])
    csv.write_text(f"{scenes.image_paths[0]},{coarse}\n")
    with pytest.raises(DataError, match=r"row 1: image .* is 320x384 pixels but mask .* is 160x192"):
        check_before_training(config_from_dict(_scene_config(scenes, train_file=str(csv))))
    # resolution resamples both: the same ground, so accepted
    plan = check_before_training(config_from_dict(_scene_config(scenes, train_file=str(csv), resolution=0.4)))
    assert len(plan.windows["train"]) == 2  # 192 x 160 at 0.4 m: 30 720 pixels, two patches of 128²
    csv.write_text(f"{scenes.image_paths[0]},{scenes.mask_paths[0]},300,0,64,64\n")
    with pytest.raises(DataError, match=r"row 1: the window col_off 300, row_off 0, width 64, height 64 goes past"):
        check_before_training(config_from_dict(_scene_config(scenes, train_file=str(csv))))


def test_csv_windows_name_the_part_of_a_scene_a_row_uses(make_scenes: Callable[..., Scenes], tmp_path: Path) -> None:
    scenes = make_scenes()
    csv = tmp_path / "windows.csv"
    csv.write_text(
        "image,mask,col_off,row_off,width,height\n"
        f"{scenes.image_paths[0]},{scenes.mask_paths[0]},10,20,100,50\n"
        f"{scenes.image_paths[1]},{scenes.mask_paths[1]}\n"
    )
    samples = read_samples(str(csv))
    assert [sample.window for sample in samples] == [(10, 20, 100, 50), None]
    tiles = _datasets(make_config(str(csv), "o", data_source={"val_file": str(csv), "class_labels": ["a", "b", "c"]}))
    assert np.array_equal(tiles["val"][0]["image"].numpy(), scenes.images[0][:, 20:70, 10:110])  # a tile: read whole
    assert tiles["val"][1]["image"].shape == (3, 256, 448)
    grid = _datasets(_scene_config(scenes, train_file=str(csv), val_file=str(csv)))["val"]
    assert [tuple(region) for region in grid.windows.regions] == [(20, 10, 50, 100), (0, 0, 256, 448)]
    assert grid.windows(0).window == (20, 10, 50, 100)


def test_a_mosaic_averages_overlaps_and_holds_one_band_of_rows(tmp_path: Path) -> None:
    """Each window predicts a value that depends on the window (so overlaps disagree); the stitched pixel is
    the mean over the windows covering it, and memory holds patch_size rows, not the scene."""
    height, width, patch = 300, 250, 64
    plan = GridWindows(np.array([[0, 0, height, width]]), patch, 24)
    expected_sum, expected_count = np.zeros((2, height, width)), np.zeros((height, width))
    path = str(tmp_path / "stitched.tif")
    legend = Legend(("a", "b"), ("#000000", "#ffffff"))
    profile = {"crs": CRS, "transform": from_origin(*ORIGIN, PIXEL, PIXEL)}
    mosaic = Mosaic(path, (0, 0, height, width), patch, "float32", legend, profile, masked=False)
    assert mosaic.sums.shape == (2, patch, width)
    for index in range(len(plan)):
        r, c, h, w = plan(index).window
        value = (index % 7) / 7
        probabilities = np.stack([np.full((h, w), value), np.full((h, w), 1 - value)]).astype(np.float32)
        mosaic.add((r, c, h, w), probabilities)
        expected_sum[:, r : r + h, c : c + w] += probabilities
        expected_count[r : r + h, c : c + w] += 1
    mosaic.finish()
    with rasterio.open(path) as src:
        np.testing.assert_allclose(src.read(), expected_sum / expected_count, atol=1e-6)
        assert src.transform == from_origin(*ORIGIN, PIXEL, PIXEL)


@pytest.mark.parametrize("output_type", ["uint8", "bit"])
def test_a_scene_training_stitches_one_cog_per_test_scene_on_its_grid(
    make_scenes: Callable[..., Scenes], tmp_path: Path, output_type: str
) -> None:
    from odeon_job.config import config_from_dict
    from odeon_job.tasks.train import train

    scenes = make_scenes()
    config = _scene_config(scenes, str(tmp_path / "out"), test_file=scenes.csv, grid_overlap=32)
    config["output_setup"].update(get_prediction=True, prediction_output_type=output_type)
    config["train_setup"].update(epochs=2, batch_size=4)
    result = train(config_from_dict(config))
    predictions = Path(result.run_folder) / "predictions"
    assert sorted(os.listdir(predictions)) == ["scene0.tif", "scene1.tif"]
    for name, image_path, classes in zip(("scene0.tif", "scene1.tif"), scenes.image_paths, scenes.classes, strict=True):
        with rasterio.open(predictions / name) as out, rasterio.open(image_path) as image:
            assert (out.crs, out.transform, out.shape) == (image.crs, image.transform, image.shape)
            assert out.count == 3 and out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert out.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == ("1" if output_type == "bit" else None)
            predicted = out.read().argmax(axis=0)
        assert (predicted == classes).mean() > 0.5  # two epochs of a tiny U-Net: well above chance (1/3)
    for split in ("val", "test"):
        entry = result.history if split == "val" else result.test
        last = next(reversed(entry.values()))
        assert sum(map(sum, last["cm_micro"])) == sum(c.size for c in scenes.classes)  # every pixel once
        assert last["ignored pixels"] == 0


@pytest.mark.slow
def test_scenes_on_s3_train_validate_and_stitch_fetching_only_the_blocks_they_touch(
    make_scenes: Callable[..., Scenes],
    bucket: Bucket,
    proxy: CountingProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from odeon_job.tasks.train import train

    from conftest import use_s3_endpoint

    scenes = make_scenes(sizes=((512, 512), (384, 640)), block=128)
    bucket.upload_folder(scenes.folder, "scenes")
    csv = bucket.url("scenes/scenes.csv")
    config = _scene_config(scenes, bucket.url("runs"), train_file=csv, val_file=csv, test_file=csv, train_windows=16)
    config["output_setup"].update(get_prediction=True, prediction_output_type="float32")
    config["train_setup"].update(epochs=2, batch_size=4)
    config["device_setup"]["num_workers"] = 1
    use_s3_endpoint(monkeypatch, proxy.endpoint)
    raster.clear_remote_cache()
    result = train(config_from_dict(config))

    entry = next(reversed(result.history.values()))
    assert sum(map(sum, entry["cm_micro"])) == 512 * 512 + 384 * 640
    for key, image in zip(("scene0.tif", "scene1.tif"), scenes.image_paths, strict=True):
        local = tmp_path / key
        local.write_bytes(bucket.get(f"runs/exp/v/predictions/{key}"))
        with rasterio.open(local) as out, rasterio.open(image) as src:
            assert (out.crs, out.transform, out.shape, out.dtypes[0]) == (src.crs, src.transform, src.shape, "float32")
            np.testing.assert_allclose(out.read().sum(axis=0), 1.0, atol=1e-4)  # softmax, averaged
    # Bytes fetched from the scenes ÷ the stored bytes of the blocks each window read touches.
    fetched = sum(
        size
        for method, path, size in proxy.responses
        if method == "GET" and path.endswith(".tif") and "/scenes/" in path
    )
    touched = _bytes_of_blocks_read(result, scenes, config)
    assert fetched / touched <= 1.5, (fetched, touched)


def _bytes_of_blocks_read(result: object, scenes: Scenes, config: dict) -> int:
    """Stored bytes of the blocks touched by every window the training, its validations and the test read
    (from the plans: they depend on the seed, epoch and index alone)."""
    datasets = _datasets(
        {
            **config,
            "data_source": {
                **config["data_source"],
                "train_file": scenes.csv,
                "val_file": scenes.csv,
                "test_file": scenes.csv,
            },
        }
    )
    epochs = config["train_setup"]["epochs"]
    reads = [datasets["train"].windows(i, epoch) for epoch in range(epochs) for i in range(len(datasets["train"]))]
    reads += [datasets["val"].windows(i) for i in range(len(datasets["val"]))] * epochs
    reads += [datasets["test"].windows(i) for i in range(len(datasets["test"]))]
    total = 0
    with (
        rasterio.open(scenes.image_paths[0]) as i0,
        rasterio.open(scenes.image_paths[1]) as i1,
        rasterio.open(scenes.mask_paths[0]) as m0,
        rasterio.open(scenes.mask_paths[1]) as m1,
    ):
        files = [(i0, m0), (i1, m1)]
        for read in reads:
            image, mask = files[read.row]
            total += raster.compressed_bytes_touched(image, read.window)
            total += raster.compressed_bytes_touched(mask, read.window)
    return total


@pytest.mark.slow
def test_two_processes_validate_each_scene_pixel_once_and_agree_with_one(
    make_scenes: Callable[..., Scenes], tmp_path: Path
) -> None:
    """With class_imbalance weighting the loss: 1 process with batches of 3 or 1 and 2 processes give the loss of
    all the scored pixels at once (it was a mean of batch losses weighted by their scored pixels: 1.2481 with batch
    1, 1.1704 with batch 5 for a loss of 1.0529 over the pixels)."""
    import torch

    from odeon_job.data.masks import as_long_classes
    from odeon_job.training.segmentation_module import load_module

    scenes = make_scenes(sizes=((384, 320), (256, 448), (200, 200)))

    def config_of(processes: int, batch_size: int) -> dict:
        # SGD at 1e-30 cannot move float32 weights (and lightunet has no batch norm): every run validates the same
        # initial model.
        config = _scene_config(scenes, str(tmp_path / "out"), test_file=scenes.csv, grid_overlap=16)
        config["train_setup"].update(
            optimizer_config={"optimizer": "sgd"}, lr=1e-30, batch_size=batch_size, class_imbalance=[0.2, 1.0, 4.0]
        )
        config["output_setup"].update(
            version_name=f"p{processes}b{batch_size}", get_prediction=True, prediction_output_type="float32"
        )
        config["device_setup"].update(num_processes=processes, strategy="ddp" if processes > 1 else None)
        return config

    def run(processes: int, batch_size: int) -> dict:
        config = config_of(processes, batch_size)
        path = tmp_path / f"p{processes}b{batch_size}.json"
        path.write_text(json.dumps(config))
        done = subprocess.run(
            [sys.executable, "-m", "odeon_job", "train", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        folder = tmp_path / "out" / "exp" / f"p{processes}b{batch_size}"
        return {
            "val": json.loads((folder / "history_val.json").read_text())["0"],
            "test": next(iter(json.loads((folder / "history_test.json").read_text()).values())),
            "predictions": {
                name: rasterio.open(folder / "predictions" / name).read()
                for name in sorted(os.listdir(folder / "predictions"))
            },
            "checkpoint": str(folder / "odeon_val_loss_ckpt" / "last.ckpt"),
        }

    one, two, single = run(1, 3), run(2, 3), run(1, 1)
    pixels = sum(c.size for c in scenes.classes)
    for split in ("val", "test"):
        assert sum(map(sum, one[split]["cm_micro"])) == pixels  # every pixel once: no window read twice
        assert two[split]["cm_micro"] == one[split]["cm_micro"] == single[split]["cm_micro"]
        assert two[split]["loss"] == pytest.approx(one[split]["loss"], rel=1e-5), split
        assert single[split]["loss"] == pytest.approx(one[split]["loss"], rel=1e-5), split
    # The loss over every scored pixel at once, from the validated model and each window's own pixels.
    module = load_module(one["checkpoint"])
    dataset = _datasets(config_of(1, 3))["val"]
    logits, targets = [], []
    with torch.no_grad():
        for index in range(len(dataset)):
            item = dataset[index]
            logits.append(module(module.scale_images(item["image"][None], "val"))[0].reshape(3, -1))
            targets.append(as_long_classes(item["mask"]).reshape(-1))
    whole = module.criterion(torch.cat(logits, dim=1)[None, :, :, None], torch.cat(targets)[None, :, None])
    assert one["val"]["loss"] == pytest.approx(float(whole), rel=1e-5)
    assert list(two["predictions"]) == ["scene0.tif", "scene1.tif", "scene2.tif"]
    for name, stitched in one["predictions"].items():  # (convolutions of other batch sizes: float rounding)
        np.testing.assert_allclose(two["predictions"][name], stitched, atol=1e-5)


def test_validate_counts_the_windows_and_warns_of_scenes_stored_in_strips(
    make_scenes: Callable[..., Scenes], tmp_path: Path
) -> None:
    from odeon_job.tasks.validate import format_summary, validate

    scenes = make_scenes()
    striped = tmp_path / "striped.tif"
    with rasterio.open(
        striped,
        "w",
        driver="GTiff",
        width=640,
        height=256,
        count=3,
        dtype="uint8",
        crs=CRS,
        transform=from_origin(*ORIGIN, PIXEL, PIXEL),
    ) as dst:  # GDAL's default layout: strips
        dst.write(np.zeros((3, 256, 640), np.uint8))
        assert dst.block_shapes[0][1] == 640
    mask = write_scene(tmp_path / "striped_mask.tif", np.zeros((1, 256, 640), np.uint8))
    csv = tmp_path / "mixed.csv"
    csv.write_text(f"{scenes.image_paths[0]},{scenes.mask_paths[0]}\n{striped},{mask}\n")
    summary = validate(config_from_dict(_scene_config(scenes, train_file=str(csv), val_file=str(csv))))
    assert summary.windows == {"train": 8 + 10, "val": 3 * 3 + 2 * 5}
    lines = format_summary(summary)
    assert "windows: train 18, val 19 (train: per epoch)" in lines
    assert [w for w in summary.warnings if "stored in strips" in w] == [
        f"1 scene(s) stored in strips (the first: {csv} row 2: {striped}): a window reads every column of its rows, "
        "several times the bytes of a tiled file; convert them to Cloud-Optimized GeoTIFFs (gdal_translate -of COG) "
        "to read only the blocks a window touches"
    ]
    assert not any("sizes" in w for w in summary.warnings)  # scenes of many sizes are no problem


def test_gdal_s_block_cache_holds_megabytes_so_a_block_is_decoded_once() -> None:
    """rasterio hands an int GDAL_CACHEMAX to GDALSetCacheMax64, in bytes: the default of 256 meant 256 bytes, no
    block cache at all, and every window decoded (and, remote, fetched) each block it touched again."""
    import ctypes

    library = raster._gdal_library()
    assert library is not None
    library.GDALGetCacheMax64.restype = ctypes.c_int64
    raster.ensure_gdal_env()
    if "GDAL_CACHEMAX" not in os.environ:
        assert library.GDALGetCacheMax64() == 256 * 1024 * 1024


def test_a_resumed_scene_training_gives_the_weights_of_an_uninterrupted_one(
    make_scenes: Callable[..., Scenes], tmp_path: Path
) -> None:
    """Random windows from (seed, epoch, index) alone: 2 epochs, then 2 more resumed with other workers, end on
    the weights of 4 epochs straight."""
    import torch

    from odeon_job.tasks.train import train

    scenes = make_scenes()

    def run(epochs: int, version: str, workers: int, resume: bool = False) -> object:
        config = _scene_config(
            scenes, str(tmp_path / "out"), train_windows=10, data_augmentation={"train": ["rotation90", "radiometry"]}
        )
        config["train_setup"].update(epochs=epochs, deterministic=True, continue_training=resume, batch_size=4)
        config["output_setup"].update(version_name=version, use_tensorboard=False)
        config["device_setup"]["num_workers"] = workers
        return train(config_from_dict(config))

    straight = run(4, "straight", workers=0)
    run(2, "split", workers=2)
    resumed = run(4, "split", workers=2, resume=True)
    losses = [entry["loss"] for entry in straight.history.values()]
    assert [entry["loss"] for entry in resumed.history.values()] == pytest.approx(losses)
    weights = [
        torch.load(Path(r.run_folder) / "odeon_val_loss_ckpt" / "last.ckpt", weights_only=True)["state_dict"]
        for r in (straight, resumed)
    ]
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


def test_a_smoke_run_writes_only_the_scenes_it_predicted_whole(
    make_scenes: Callable[..., Scenes], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """train_setup.testing predicts a few test batches: a scene whose windows were not all predicted is not
    written (a hole-ridden GeoTIFF would look like a prediction), and the log says so."""
    from odeon_job.tasks.train import train

    scenes = make_scenes(sizes=((128, 128), (640, 640)))  # 1 window, then 25: 4 batches of 2 reach the second
    config = _scene_config(scenes, str(tmp_path / "out"), test_file=scenes.csv)
    config["output_setup"]["get_prediction"] = True
    config["train_setup"].update(testing=True, batch_size=2)
    with caplog.at_level("WARNING", logger="odeon"):
        result = train(config_from_dict(config))
    assert os.listdir(Path(result.run_folder) / "predictions") == ["scene0.tif"]
    assert "predictions: scene1.tif was not written: only 7 of its 25 windows were predicted" in caplog.text


def _ramp_scene(folder: Path, height: int, width: int) -> str:
    """A float scene whose value is each pixel's ground x (in metres from the scene's west edge), and a CSV of it
    with a class-index mask; returns the CSV."""
    x = (np.arange(width) + 0.5) * PIXEL
    write_scene(folder / "ramp.tif", np.broadcast_to(x, (1, height, width)).astype(np.float32))
    halves = (np.arange(width) * 2 // width).astype(np.uint8)  # west and east
    write_scene(folder / "ramp_mask.tif", halves[None, None].repeat(height, 1))
    (folder / "ramp.csv").write_text("ramp.tif,ramp_mask.tif\n")
    return str(folder / "ramp.csv")


@pytest.mark.slow
def test_at_another_resolution_every_pixel_is_read_and_written_where_its_ground_is(tmp_path: Path) -> None:
    """517 px of 0.2 m read at 0.3 m (344.67 grid pixels: not a whole number): on a ramp whose value is its ground
    x, every window reads each grid column at the same ground, and the stitched COG (scenes) and the tile's
    GeoTIFF (a CSV window read whole) put each pixel at the ground it was read from. GDAL's bilinear kernel alone
    is allowed: 0.03 of a grid pixel (it was 0.27 between windows and 0.34 in the COG)."""
    from odeon_job.tasks.train import train

    csv = _ramp_scene(tmp_path, 133, 517)
    tile_csv = tmp_path / "tile.csv"
    tile_csv.write_text("ramp.tif,ramp_mask.tif,31,7,301,97\n")
    base = {
        "patch_size": 64,
        "grid_overlap": 16,
        "resolution": 0.3,
        "image_max_value": 100.0,
        "class_labels": ["west", "east"],
    }
    runs = {
        "scene": make_config(csv, str(tmp_path / "out"), data_source={**base, "val_file": csv, "test_file": csv}),
        "tile": make_config(
            csv,
            str(tmp_path / "out"),
            data_source={
                "val_file": csv,
                "test_file": str(tile_csv),
                "resolution": 0.3,
                "image_max_value": 100.0,
                "class_labels": ["west", "east"],
            },
        ),
    }
    for name, config in runs.items():
        config["output_setup"].update(
            get_prediction=True, prediction_output_type="float32", version_name=name, use_tensorboard=False
        )
        if name == "tile":
            config["data_source"]["train_file"] = str(tile_csv)
        result = train(config_from_dict(config))
        dataset = _datasets(config)["test"]
        seen: dict[int, float] = {}
        with rasterio.open(Path(result.run_folder) / "predictions" / "ramp.tif") as out:
            transform, out_width = out.transform, out.width
        for index in range(len(dataset)):
            values = dataset[index]["image"].numpy()[0]
            read = dataset.windows(index)
            # a tile: its CSV window (col_off 31) snapped to the grid
            left = read.window[1] if read.window is not None else round(31 / 1.5)
            out_left = left if name == "scene" else 0  # the tile's GeoTIFF starts at its own window
            columns = np.arange(values.shape[1])
            ground_x = (transform * (out_left + columns + 0.5, 0.5))[0] - ORIGIN[0]
            grid_pixel = transform.a
            inside = (left + columns > 0) & (left + columns < 344)  # the scene's edge columns: a truncated kernel
            error = np.abs(values[:, inside] - ground_x[inside]) / grid_pixel
            assert error.max() < 0.03, (name, index, error.max())
            for column, value in zip(left + columns, values[0], strict=True):
                assert abs(seen.setdefault(int(column), float(value)) - value) < 1e-3 * grid_pixel
        assert out_width == (345 if name == "scene" else round(301 / 1.5))


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 160 KB tmpfs, for a disk that fills up (root only: skipped where mounting is not allowed)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_full_staging_folder_while_stitching_is_one_line_and_publishes_nothing(
    make_scenes: Callable[..., Scenes], tmp_path: Path, small_tmpfs: Path
) -> None:
    """TMPDIR fills up while a scene is stitched: GDAL's COG copy returned normally over a truncated file, which was
    published as a prediction with exit 0. Now one line naming the staged file and TMPDIR, exit 2, no prediction and
    no staging folder left."""
    scenes = make_scenes()
    config = _scene_config(scenes, str(tmp_path / "out"), test_file=scenes.csv)
    config["output_setup"].update(get_prediction=True, prediction_output_type="float32", use_tensorboard=False)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "odeon_job", "train", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(small_tmpfs)},
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("odeon: error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-3000:]
    assert f"odeon: error: {small_tmpfs}/odeon-prediction-" in errors[0]
    assert ": cannot write: no space left on device" in errors[0] and f"staged under TMPDIR, {small_tmpfs}" in errors[0]
    assert "Traceback" not in done.stderr
    predictions = tmp_path / "out" / "exp" / "v" / "predictions"
    assert not predictions.exists() or not os.listdir(predictions)
    assert not [name for name in os.listdir(small_tmpfs) if name.startswith("odeon-")]
