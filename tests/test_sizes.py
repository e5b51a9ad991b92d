"""Sizes are checked before they are allocated: huge tiles and patches are refused with one line, a TIFF header that
claims more pixels than the file stores is an error, odeon validate reads scenes in windows (bounded memory), and
windows are never padded beyond the scenes of their split."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from odeon_job.config import config_from_dict
from odeon_job.data.samples import parse_rows
from odeon_job.errors import ConfigError, DataError

from conftest import CRS, ORIGIN, PIXEL, make_config, write_scene


def _sparse(path: Path, width: int, height: int, *, count: int = 1, block: int = 512) -> str:
    """A tiled GeoTIFF of ``width`` x ``height`` pixels with no block written (GDAL's sparse files: a few KB on disk,
    every block listed with offset 0, read as zeros)."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype="uint8",
        crs=CRS,
        transform=from_origin(*ORIGIN, PIXEL, PIXEL),
        tiled=True,
        blockxsize=block,
        blockysize=block,
        sparse_ok=True,
    ):
        pass
    return str(path)


def _lying_tiff(path: Path, width: int, height: int) -> str:
    """A TIFF whose header claims ``width`` x ``height`` uint8 pixels in strips of one row, but whose strip index
    lists one strip only: the bytes of the others are nowhere. Returns its path."""
    payload = bytes(range(256)) * (width // 256 + 1)
    entries = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8),
        (277, 3, 1),
        (278, 4, 1),
        (279, 4, width),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        ifd += struct.pack("<HHI", tag, kind, 1) + (
            struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        )
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8 + width) + payload[:width] + ifd + struct.pack("<I", 0))
    return str(path)


def _odeon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "odeon_job", *args], capture_output=True, text=True, timeout=300)


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("odeon: error:")]


def _config_file(tmp_path: Path, config: dict[str, Any]) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_validate_reads_a_huge_sparse_scene_in_windows_with_bounded_memory(tmp_path: Path) -> None:
    """A 12 000² scene (144 MB as one uint8 array) is counted in windows: memory stays a few windows' worth."""
    from odeon_job.tasks.validate import validate

    image = _sparse(tmp_path / "image.tif", 12_000, 12_000, count=3)
    mask = _sparse(tmp_path / "mask.tif", 12_000, 12_000)
    (tmp_path / "scenes.csv").write_text(f"{image},{mask}\n")
    config = config_from_dict(
        make_config(
            str(tmp_path / "scenes.csv"),
            str(tmp_path / "out"),
            data_source={"val_file": str(tmp_path / "scenes.csv"), "patch_size": 256, "class_labels": ["a", "b"]},
        )
    )
    tracemalloc.start()
    try:
        summary = validate(config)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not summary.problems
    assert summary.pixels == {"train": 12_000**2, "val": 12_000**2}  # every pixel counted once
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_a_tile_too_large_to_read_whole_is_refused_naming_the_row_before_the_run_folder(tmp_path: Path) -> None:
    image = _sparse(tmp_path / "image.tif", 9000, 100, count=3)
    mask = _sparse(tmp_path / "mask.tif", 9000, 100)
    small = write_scene(tmp_path / "small.tif", np.zeros((3, 64, 64), np.uint8))
    small_mask = write_scene(tmp_path / "small_mask.tif", np.zeros((1, 64, 64), np.uint8))
    csv = tmp_path / "tiles.csv"
    csv.write_text(f"{image},{mask}\n{small},{small_mask}\n")
    config = make_config(
        str(csv), str(tmp_path / "out"), data_source={"val_file": str(csv), "class_labels": ["a", "b"]}
    )
    expected = (
        f"odeon: error: {csv} row 1: {image} is 9000x100 pixels (at the split's resolution), too large to "
        "read whole as one tile (at most 8192 pixels a side go through the network in one piece): set "
        "data_source.patch_size (e.g. 512) to read it in windows"
    )
    result = _odeon("train", "-c", _config_file(tmp_path, config))
    assert result.returncode == 2 and _errors(result) == [expected], result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
    validated = _odeon("validate", "-c", _config_file(tmp_path, config))
    assert validated.returncode == 2 and expected in _errors(validated)
    config["data_source"]["patch_size"] = 64  # the same rows, read in windows: accepted
    assert _odeon("validate", "-c", _config_file(tmp_path, config)).returncode == 0


def test_a_tiff_header_claiming_more_pixels_than_the_file_stores_is_an_error_naming_it(tmp_path: Path) -> None:
    """The strip index lists 1 of 4000 strips: GDAL would read the others as zeros (and a training on them would end
    with exit 0); a legitimately sparse file (every block listed) still reads."""
    image = _lying_tiff(tmp_path / "lying.tif", 4000, 4000)
    mask = _lying_tiff(tmp_path / "lying_mask.tif", 4000, 4000)
    csv = tmp_path / "scene.csv"
    csv.write_text(f"{image},{mask}\n{image},{mask}\n")
    config = make_config(
        str(csv),
        str(tmp_path / "out"),
        data_source={
            "val_file": str(csv),
            "patch_size": 64,
            "image_bands": [1],
            "class_labels": [f"c{i}" for i in range(256)],
        },
    )
    result = _odeon("train", "-c", _config_file(tmp_path, config))
    errors = _errors(result)
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert errors[0].startswith(f"odeon: error: {csv} row ") and f"cannot read {image}" in errors[0]
    assert 'Incorrect count for "Strip' in errors[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()

    from odeon_job.data.raster import open_raster, read_window

    sparse = _sparse(tmp_path / "sparse.tif", 4000, 4000)
    with open_raster(sparse, "row 1") as src:
        from odeon_job.data.raster import grid_of

        assert not read_window(src, [1], (3000, 3000, 8, 8), grid_of(src, None), "row 1").any()


@pytest.mark.parametrize("patch_size", [100_000, 10**12, 2**70, 8193])
def test_patch_size_is_bounded_by_what_goes_through_the_network_with_the_reason(patch_size: int) -> None:
    config = make_config("t.csv", "out", data_source={"patch_size": patch_size})
    with pytest.raises(
        ConfigError,
        match=r"data_source\.patch_size: .*at most 8192 \(a window goes through the "
        r"network in one piece",
    ):
        config_from_dict(config)
    config["data_source"]["patch_size"] = 8192
    config_from_dict(config)


def test_windows_are_padded_to_their_split_s_scenes_not_to_a_larger_patch(tmp_path: Path) -> None:
    """patch_size 4096 on a 224 x 160 scene: windows are the scene's size (no 4096² batch)."""
    from odeon_job.data.datamodule import SegmentationDataModule
    from odeon_job.tasks.preflight import check_before_training

    rng = np.random.default_rng(0)
    image = write_scene(tmp_path / "scene.tif", rng.integers(0, 255, (3, 160, 224), dtype=np.uint8))
    mask = write_scene(tmp_path / "mask.tif", rng.integers(0, 2, (1, 160, 224), dtype=np.uint8))
    csv = tmp_path / "scene.csv"
    csv.write_text(f"{image},{mask}\n")
    config = config_from_dict(
        make_config(
            str(csv),
            str(tmp_path / "out"),
            data_source={"val_file": str(csv), "patch_size": 4096, "class_labels": ["a", "b"]},
        )
    )
    plan = check_before_training(config)
    datamodule = SegmentationDataModule(plan.splits, plan.spec, config.data_source, 2, 0, windows=plan.windows)
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        assert next(iter(loader))["image"].shape[-2:] == (160, 224)


@pytest.mark.parametrize("value", ["1e30", str(2**63), str(2**31), "-1", "nan"])
def test_csv_window_values_beyond_any_raster_are_refused_with_the_row(value: str) -> None:
    with pytest.raises(DataError, match=r"rows\.csv row 1: col_off must be a whole number from 0 to 2147483647"):
        parse_rows("rows.csv", f"a.tif,b.tif,{value},0,8,8\n")
    images, _, _, windows = parse_rows("rows.csv", f"a.tif,b.tif,{2**31 - 1},0,8,8\n")
    assert windows is not None and windows[0, 0] == 2**31 - 1


def test_a_scene_too_wide_to_stitch_is_refused_before_the_run_folder(tmp_path: Path) -> None:
    """Stitching holds patch_size rows across a scene's width: a 2,000,000-pixel-wide scene with windows of 512
    would hold 12 GiB; refused naming the row, with the hint to split it into rows."""
    from odeon_job.tasks.train import train

    image = _sparse(tmp_path / "wide.tif", 2_000_000, 512, count=3, block=512)
    mask = _sparse(tmp_path / "wide_mask.tif", 2_000_000, 512, block=512)
    small = write_scene(tmp_path / "small.tif", np.zeros((3, 512, 512), np.uint8))
    small_mask = write_scene(tmp_path / "small_mask.tif", np.zeros((1, 512, 512), np.uint8))
    train_csv, test_csv = tmp_path / "train.csv", tmp_path / "test.csv"
    train_csv.write_text(f"{small},{small_mask}\n{small},{small_mask}\n")
    test_csv.write_text(f"{image},{mask}\n")
    config = make_config(
        str(train_csv),
        str(tmp_path / "out"),
        data_source={
            "val_file": str(train_csv),
            "test_file": str(test_csv),
            "patch_size": 512,
            "class_labels": ["a", "b"],
        },
        output_setup={"get_prediction": True},
    )
    with pytest.raises(
        ConfigError,
        match=r"output_setup\.get_prediction: .*test\.csv row 1: stitching its prediction "
        r"holds 512 rows of 2000000 pixels for 2 classes, 11\.4 GiB \(at most 4\): "
        r"split the scene into narrower rows",
    ):
        train(config_from_dict(config))
    assert not (tmp_path / "out").exists()
    (tmp_path / "test.csv").write_text(f"{image},{mask},0,0,200000,512\n")  # a narrower row of it: accepted
    from odeon_job.tasks.preflight import check_before_training

    check_before_training(config_from_dict(config))


def test_an_epoch_of_billions_of_windows_is_refused_with_the_way_to_size_it(tmp_path: Path) -> None:
    """A 10^6 x 10^6 sparse scene read in windows of 8 with train_windows "area": 1.6e10 windows an epoch, whose
    order alone would take 125 GB."""
    from odeon_job.tasks.preflight import check_before_training

    image = _sparse(tmp_path / "huge.tif", 10**6, 10**6, count=3, block=4096)
    mask = _sparse(tmp_path / "huge_mask.tif", 10**6, 10**6, block=4096)
    csv = tmp_path / "huge.csv"
    csv.write_text(f"{image},{mask}\n{image},{mask},0,0,64,64\n")
    config = make_config(
        str(csv),
        str(tmp_path / "out"),
        data_source={"val_file": str(tmp_path / "val.csv"), "patch_size": 8, "class_labels": ["a", "b"]},
    )
    (tmp_path / "val.csv").write_text(f"{image},{mask},0,0,64,64\n")
    with pytest.raises(ConfigError, match=r"data_source\.train_windows: 'area' gives 15,625,000,064 windows an epoch"):
        check_before_training(config_from_dict(config))
    config["data_source"]["train_windows"] = 1000
    assert len(check_before_training(config_from_dict(config)).windows["train"]) == 1000
