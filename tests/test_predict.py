"""``odeon predict``: a model trained on tiles maps unlabelled scenes, as class maps a GIS opens (colour table, class
names GDAL reads, a QGIS style), probabilities, nodata where the image has none; from and to S3; restartable; the
same maps from two processes as from one; bad inputs refused in one line before any work."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from odeon_job.commands import cli
from odeon_job.config import config_from_dict, load_predict_config
from odeon_job.data.raster import _gdal_library
from odeon_job.tasks.predict import predict
from odeon_job.tasks.train import train
from odeon_job.training.segmentation_module import load_module

from conftest import CRS, class_map, make_config, onehot, paint, scene_class_map, write_tif
from s3_server import Bucket

LABELS = ["water", "forest", "road"]
COLORS = ["#0000ff", "#00aa00", "#888888"]
pytestmark = pytest.mark.slow


@dataclass
class Trained:
    run: str
    checkpoint: str
    folder: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A lightunet trained one epoch on 32 px tiles, with class names and colours."""
    folder = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        classes = class_map(rng, 32, 3)
        write_tif(folder / "img" / f"{i}.tif", paint(classes, rng))
        write_tif(folder / "msk" / f"{i}.tif", onehot(classes, 3))
        rows.append(f"img/{i}.tif,msk/{i}.tif")
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    config = make_config(
        str(folder / "train.csv"), str(folder / "out"), data_source={"class_labels": LABELS, "class_colors": COLORS}
    )
    result = train(config_from_dict(config))
    return Trained(result.run_folder, result.best_checkpoint, folder)


def write_image(path: Path, height: int, width: int, seed: int = 1, nodata_corner: bool = True, **profile: Any) -> str:
    """An unlabelled tiled scene of ``height`` x ``width``, nodata 0, its top-left 40 x 50 pixels nodata."""
    rng = np.random.default_rng(seed)
    image = paint(scene_class_map(rng, height, width, 3), rng)
    image[image == 0] = 1  # no real pixel is nodata
    if nodata_corner:
        image[:, :40, :50] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "crs": CRS,
        "transform": from_origin(651_000 + seed * 100, 6_862_000, 0.2, 0.2),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 128,
        "blockysize": 128,
        **profile,
    }
    with rasterio.open(path, "w", **options) as dst:
        dst.write(image)
    return str(path)


def run_predict(**options: Any) -> Any:
    return predict(load_predict_config(None, {"batch_size": 3, **options}, ["device_setup.num_workers=0"]))


def category_names(path: str) -> list[str]:
    """Band 1's category names as GDAL's own reader gives them (GDALGetRasterCategoryNames)."""
    gdal = _gdal_library()
    assert gdal is not None
    gdal.GDALAllRegister()
    gdal.GDALOpen.restype, gdal.GDALOpen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    gdal.GDALGetRasterBand.restype, gdal.GDALGetRasterBand.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int]
    gdal.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    gdal.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    gdal.GDALClose.argtypes = [ctypes.c_void_p]
    gdal.GDALGetMetadata.restype, gdal.GDALGetMetadata.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]
    gdal.CPLSetThreadLocalConfigOption.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    gdal.CPLGetConfigOption.restype, gdal.CPLGetConfigOption.argtypes = (
        ctypes.c_char_p,
        [ctypes.c_char_p, ctypes.c_char_p],
    )
    # As a GIS opens it: looking for the files beside it (the job's own reads skip that, EMPTY_DIR).
    option = b"GDAL_DISABLE_READDIR_ON_OPEN"
    before = gdal.CPLGetConfigOption(option, None)
    gdal.CPLSetThreadLocalConfigOption(option, b"FALSE")
    dataset = gdal.GDALOpen(path.encode(), 0)
    gdal.CPLSetThreadLocalConfigOption(option, before)
    assert dataset, path
    try:
        gdal.GDALGetMetadata(dataset, None)  # gdalinfo's first question (GDAL reads the .aux.xml then)
        names = gdal.GDALGetRasterCategoryNames(gdal.GDALGetRasterBand(dataset, 1))
        found: list[str] = []
        while names and names[len(found)]:
            found.append(names[len(found)].decode())
        return found
    finally:
        gdal.GDALClose(dataset)


def model_probabilities(checkpoint: str, image: np.ndarray) -> np.ndarray:
    """The model run in Python on a (bands, H, W) uint8 image: (classes, H, W) probabilities."""
    module = load_module(checkpoint)
    with torch.no_grad():
        logits = module(module.scale_images(torch.from_numpy(image)[None], "test"))
        return module.probabilities(logits)[0].numpy()


def read(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    with rasterio.open(path) as src:
        return src.read(), {"crs": src.crs, "transform": src.transform, "nodata": src.nodata}


def test_a_class_map_is_the_argmax_of_the_probabilities_which_are_the_model_s_and_a_gis_reads_it(
    trained: Trained, tmp_path: Path
) -> None:
    scene = write_image(tmp_path / "ortho" / "scene.tif", 256, 384)
    classes_out, probabilities_out = tmp_path / "classes", tmp_path / "probabilities"
    result = run_predict(model=trained.run, images=str(tmp_path / "ortho"), output=str(classes_out), patch_size=128)
    assert result.written == ["scene.tif"] and result.skipped == []
    run_predict(
        model=trained.checkpoint, images=scene, output=str(probabilities_out), patch_size=128, output_type="float32"
    )
    classes, class_profile = read(classes_out / "scene.tif")
    probabilities, float_profile = read(probabilities_out / "scene.tif")
    with rasterio.open(scene) as src:
        image, crs, transform = src.read(), src.crs, src.transform
        assert class_profile["crs"] == crs == float_profile["crs"]
        assert class_profile["transform"] == transform == float_profile["transform"]
    nodata = (image == 0).all(axis=0)
    assert nodata.sum() == 40 * 50
    # nodata where the image is nodata, in both types, and nowhere else
    assert class_profile["nodata"] == 255 and ((classes[0] == 255) == nodata).all()
    assert float_profile["nodata"] == -1 and ((probabilities == -1).all(axis=0) == nodata).all()
    # the class map is the argmax of the probabilities, which are the model's on each (non-overlapping) window
    assert (classes[0][~nodata] == probabilities.argmax(axis=0)[~nodata]).all()
    expected = np.zeros_like(probabilities)
    for top in (0, 128):
        for left in (0, 128, 256):
            window = image[:, top : top + 128, left : left + 128]
            expected[:, top : top + 128, left : left + 128] = model_probabilities(trained.checkpoint, window)
    assert np.abs(probabilities - expected)[:, ~nodata].max() < 1e-5
    assert len(np.unique(classes[0][~nodata])) >= 2  # a map, not a constant
    # what a GIS reads: the colour table, GDAL's category names, the band names, QGIS's style
    with rasterio.open(classes_out / "scene.tif") as src:
        table = src.colormap(1)
        assert [table[i][:3] for i in range(3)] == [(0, 0, 255), (0, 170, 0), (136, 136, 136)]
        assert table[255][3] == 0  # nodata: transparent
        assert src.descriptions == ("class",)
    with rasterio.open(probabilities_out / "scene.tif") as src:
        assert src.descriptions == tuple(LABELS)
    assert category_names(str(classes_out / "scene.tif")) == LABELS
    entries = ElementTree.parse(classes_out / "scene.qml").getroot().findall(".//paletteEntry")
    assert [(e.get("value"), e.get("label"), e.get("color")) for e in entries] == [
        ("0", "water", "#0000ff"),
        ("1", "forest", "#00aa00"),
        ("2", "road", "#888888"),
    ]


def test_one_window_over_the_whole_scene_is_the_model_run_on_the_whole_scene(trained: Trained, tmp_path: Path) -> None:
    scene = write_image(tmp_path / "scene.tif", 96, 160, nodata_corner=False)
    run_predict(
        model=trained.checkpoint, images=scene, output=str(tmp_path / "out"), patch_size=160, output_type="float32"
    )
    probabilities, _ = read(tmp_path / "out" / "scene.tif")
    image, _ = read(scene)
    assert np.abs(probabilities - model_probabilities(trained.checkpoint, image)).max() < 1e-5


def test_uint8_probabilities_mark_nodata_with_a_mask_band(trained: Trained, tmp_path: Path) -> None:
    """uint8 probabilities use all 256 values: nodata is the file's internal mask."""
    scene = write_image(tmp_path / "scene.tif", 128, 128)
    run_predict(model=trained.checkpoint, images=scene, output=str(tmp_path / "out"), output_type="uint8")
    with rasterio.open(tmp_path / "out" / "scene.tif") as src:
        assert src.nodata is None and src.count == 3
        mask = src.dataset_mask()
    assert ((mask == 0) == (read(scene)[0] == 0).all(axis=0)).all()


def test_images_from_s3_give_the_maps_of_local_images_and_maps_go_to_s3(
    trained: Trained, tmp_path: Path, bucket: Bucket
) -> None:
    local = [write_image(tmp_path / "in" / f"tile_{i}.tif", 200, 150, seed=i) for i in range(2)]
    bucket.upload_folder(tmp_path / "in", "orthos")
    bucket.put("lists/images.csv", "image\n../orthos/tile_0.tif\n../orthos/tile_1.tif\n")
    run_predict(
        model=trained.run, images=str(tmp_path / "in"), output=str(tmp_path / "local"), patch_size=64, overlap=8
    )
    result = run_predict(
        model=trained.run, images=bucket.url("lists/images.csv"), output=bucket.url("maps"), patch_size=64, overlap=8
    )
    assert sorted(result.written) == ["tile_0.tif", "tile_1.tif"]
    assert set(bucket.keys("maps/")) >= {f"maps/tile_{i}.{s}" for i in range(2) for s in ("tif", "qml", "tif.aux.xml")}
    for i, path in enumerate(local):
        (tmp_path / "got.tif").write_bytes(bucket.get(f"maps/tile_{i}.tif"))
        remote, profile = read(tmp_path / "got.tif")
        expected, expected_profile = read(tmp_path / "local" / f"tile_{i}.tif")
        assert (remote == expected).all() and profile == expected_profile
        assert profile["transform"] == read(path)[1]["transform"]


def test_images_of_the_same_name_in_two_folders_get_two_maps(trained: Trained, tmp_path: Path) -> None:
    for folder in ("east", "west"):
        write_image(tmp_path / folder / "dalle.tif", 64, 64)
    (tmp_path / "list.csv").write_text("east/dalle.tif\nwest/dalle.tif\n")
    result = run_predict(model=trained.run, images=str(tmp_path / "list.csv"), output=str(tmp_path / "out"))
    assert sorted(result.written) == ["east_dalle.tif", "west_dalle.tif"]


def _odeon(*arguments: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "odeon_job", "predict", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )


def test_kill_9_mid_run_then_a_rerun_gives_complete_identical_maps_skipping_finished_ones(
    trained: Trained, tmp_path: Path
) -> None:
    for i in range(8):
        write_image(tmp_path / "in" / f"s{i}.tif", 256, 256, seed=i)
    common = ["--model", trained.run, "--images", str(tmp_path / "in"), "--patch-size", "64", "--batch-size", "1"]
    clean = _odeon(*common, "--output", str(tmp_path / "clean"))
    assert clean.wait(timeout=600) == 0
    killed = _odeon(*common, "--output", str(tmp_path / "out"))
    maps = tmp_path / "out"
    while killed.poll() is None and not (maps.exists() and list(maps.glob("*.tif"))):
        time.sleep(0.02)
    written_before = sorted(p.name for p in maps.glob("*.tif"))
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert 0 < len(written_before) < 8, "the kill came before the first map or after the last"
    for name in written_before:  # whole: readable to the last block
        read(maps / name)
    rerun = _odeon(*common, "--output", str(maps))
    output = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, output
    assert f"{len(written_before)} already mapped" in output
    assert sorted(p.name for p in maps.glob("*.tif")) == [f"s{i}.tif" for i in range(8)]
    for i in range(8):
        assert (read(maps / f"s{i}.tif")[0] == read(tmp_path / "clean" / f"s{i}.tif")[0]).all()
    assert not [name for name in os.listdir(maps) if name.startswith(".") or "part" in name]


def test_sigterm_stops_with_143_and_one_line_leaving_whole_maps(trained: Trained, tmp_path: Path) -> None:
    for i in range(6):
        write_image(tmp_path / "in" / f"s{i}.tif", 256, 256, seed=i)
    common = ["--model", trained.run, "--images", str(tmp_path / "in"), "--patch-size", "64", "--batch-size", "1"]
    maps = tmp_path / "out"
    running = _odeon(*common, "--output", str(maps))
    while running.poll() is None and not (maps.exists() and list(maps.glob("*.tif"))):
        time.sleep(0.02)
    running.send_signal(signal.SIGTERM)
    output = running.communicate(timeout=120)[0]
    assert running.returncode == 143, output
    assert "odeon: stopped by SIGTERM; the maps written are whole: run again to map the others" in output
    assert "Traceback" not in output
    for path in maps.glob("*.tif"):
        read(path)
    assert not [name for name in os.listdir(maps) if name.startswith(".")]
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"odeon-prediction-{running.pid}-*"))


def test_two_processes_write_the_maps_one_process_writes(trained: Trained, tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / "in" / f"s{i}.tif", 128, 192, seed=i)
    common = ["--model", trained.run, "--images", str(tmp_path / "in"), "--patch-size", "64"]
    one = _odeon(*common, "--output", str(tmp_path / "one"), "--accelerator", "cpu")
    assert one.wait(timeout=600) == 0
    two = _odeon(
        *common, "--output", str(tmp_path / "two"), "--set", "device_setup.accelerator=cpu",
        "--set", "device_setup.num_processes=2", "--set", "device_setup.num_workers=0",
    )  # fmt: skip
    output = two.communicate(timeout=600)[0]
    assert two.returncode == 0, output
    assert "images 2/2" in output  # the first process's share: images 0 and 2 of 3
    for i in range(3):
        assert (read(tmp_path / "two" / f"s{i}.tif")[0] == read(tmp_path / "one" / f"s{i}.tif")[0]).all()
    # fewer images than processes (a rerun with one left): the idle process is not an error
    (tmp_path / "two" / "s1.tif").unlink()
    again = _odeon(*common, "--output", str(tmp_path / "two"), *two.args[-6:])
    output = again.communicate(timeout=600)[0]
    assert again.returncode == 0 and "Traceback" not in output and "2 already mapped" in output, output
    assert (read(tmp_path / "two" / "s1.tif")[0] == read(tmp_path / "one" / "s1.tif")[0]).all()


def _error_lines(capsys: pytest.CaptureFixture[str], *arguments: str) -> list[str]:
    assert cli.main(["predict", *arguments]) == 2
    errors = capsys.readouterr().err
    assert "Traceback" not in errors
    lines = [line for line in errors.splitlines() if line.startswith("odeon: error:")]
    assert len(lines) == 1, errors
    return lines


def test_bad_inputs_are_one_line_before_any_work(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scene = write_image(tmp_path / "in" / "scene.tif", 64, 64)
    out = str(tmp_path / "out")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    assert (
        "junk.ckpt"
        in _error_lines(capsys, "--model", str(tmp_path / "junk.ckpt"), "--images", scene, "--output", out)[0]
    )
    assert (
        "is not a run folder" in _error_lines(capsys, "--model", str(tmp_path), "--images", scene, "--output", out)[0]
    )
    (tmp_path / "empty").mkdir()
    line = _error_lines(capsys, "--model", trained.run, "--images", str(tmp_path / "empty"), "--output", out)[0]
    assert "no image to predict" in line
    write_tif(tmp_path / "gray" / "one_band.tif", np.ones((1, 32, 32), np.uint8))
    line = _error_lines(capsys, "--model", trained.run, "--images", str(tmp_path / "gray"), "--output", out)[0]
    assert "one_band.tif has 1 band(s)" in line
    write_tif(tmp_path / "deep" / "u16.tif", np.ones((3, 32, 32), np.uint16))
    line = _error_lines(capsys, "--model", trained.run, "--images", str(tmp_path / "deep"), "--output", out)[0]
    assert "u16.tif is uint16" in line
    from test_sizes import _sparse  # a header declaring 2,000,000 columns (a few KB on disk)

    (tmp_path / "wide").mkdir()
    wide = _sparse(tmp_path / "wide" / "wide.tif", 2_000_000, 600, count=3)
    line = _error_lines(capsys, "--model", trained.run, "--images", wide, "--output", out)[0]
    assert "wide.tif: stitching its map holds 512 rows of 2000000 pixels" in line and "GiB" in line
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    line = _error_lines(capsys, "--model", trained.run, "--images", scene, "--output", str(tmp_path / "busy"))[0]
    assert "notes.txt" in line and "not this prediction's" in line
    assert cli.main(["predict", "--model", trained.run, "--images", scene, "--output", out]) == 0
    line = _error_lines(capsys, "--model", trained.run, "--images", scene, "--output", out, "--output-type", "uint8")[0]
    assert "another output_type" in line
    line = _error_lines(capsys, "--model", trained.run, "--images", scene, "--output", out, "--patch-size", "4")[0]
    assert "patch_size" in line
    assert not (tmp_path / "busy" / "scene.tif").exists() and not os.listdir(tmp_path / "empty")
    assert json.loads((tmp_path / "out" / "odeon-predict.json").read_text())["output_type"] == "class"


def test_a_scene_on_s3_is_fetched_once_and_a_csv_window_maps_only_its_part(
    trained: Trained, tmp_path: Path, bucket: Bucket, proxy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mapping a whole scene from S3 in overlapping windows fetches at most 1.5 times the stored bytes of its blocks
    (each block once: neighbours' shared blocks come from GDAL's cache); a CSV row naming a window of the scene maps
    only that part, on the scene's grid."""
    from odeon_job.data.raster import compressed_bytes_touched

    from conftest import use_s3_endpoint

    scene = tmp_path / "orthos" / "large.tif"
    pixels = np.random.default_rng(0).integers(1, 255, (3, 1536, 1536), dtype=np.uint8)  # incompressible
    write_image(scene, 1536, 1536, nodata_corner=False, nodata=None, blockxsize=256, blockysize=256)
    with rasterio.open(scene, "r+") as dst:
        dst.write(pixels)
        transform = dst.transform
    rasterio.shutil.copy(
        scene, tmp_path / "fresh.tif", driver="GTiff", tiled=True, blockxsize=256, blockysize=256, compress="deflate"
    )
    bucket.put("orthos/large.tif", (tmp_path / "fresh.tif").read_bytes())
    bucket.put("lists/part.csv", "image,col_off,row_off,width,height\n../orthos/large.tif,512,256,512,384\n")
    with rasterio.open(tmp_path / "fresh.tif") as src:
        touched = compressed_bytes_touched(src, (0, 0, 1536, 1536))
    use_s3_endpoint(monkeypatch, proxy.endpoint)
    proxy.clear()
    result = run_predict(
        model=trained.run, images=bucket.url("orthos/"), output=str(tmp_path / "whole"), patch_size=256, overlap=64
    )
    served = proxy.bytes_served
    assert result.written == ["large.tif"]
    assert touched > 6_000_000 and served <= 1.5 * touched, (served, touched)
    result = run_predict(
        model=trained.run, images=bucket.url("lists/part.csv"), output=str(tmp_path / "part"), patch_size=256
    )
    assert result.written == ["large_512_256.tif"]
    with (
        rasterio.open(tmp_path / "part" / "large_512_256.tif") as part,
        rasterio.open(tmp_path / "whole" / "large.tif") as whole,
    ):
        assert part.shape == (384, 512) and part.transform == transform * transform.translation(512, 256)
        assert (part.read() == whole.read(window=Window(512, 256, 512, 384))).mean() > 0.9  # (window edges differ)
