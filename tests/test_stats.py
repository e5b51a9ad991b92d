"""odeon stats against NumPy on the whole data."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio

from odeon_job.commands import cli
from odeon_job.tasks.stats import median_frequency_weights

from conftest import Scenes, TinyDataset, make_config


def test_stats_are_numpy_s_over_every_tile_and_paste_into_the_configuration(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, val = make_dataset(n=6, bands=4, n_classes=3), make_dataset(n=3, bands=4, n_classes=3, name="v", seed=5)
    config = make_config(train.csv, str(tmp_path / "out"), data_source={"val_file": val.csv, "image_bands": [3, 1, 2]})
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    assert cli.main(["stats", "-c", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)

    for data, split in ((train, "train"), (val, "val")):
        pixels = (
            np.concatenate(
                [rasterio.open(image).read([3, 1, 2]).reshape(3, -1) for image in data.images], axis=1
            ).astype(np.float64)
            / 255
        )
        stats = printed["data_source"]["normalization_weights"][split]
        assert stats["mean"] == pytest.approx(pixels.mean(axis=1).tolist(), abs=1e-6)
        assert stats["std"] == pytest.approx(pixels.std(axis=1).tolist(), abs=1e-6)
    counts = np.bincount(np.concatenate([classes.ravel() for classes in train.classes]), minlength=3)
    assert printed["train_setup"]["class_imbalance"] == median_frequency_weights(counts)
    # What it prints is configuration: pasted in, it is accepted and used.
    config["data_source"].update(printed["data_source"])
    config["train_setup"].update(printed["train_setup"])
    path.write_text(json.dumps(config))
    assert cli.main(["validate", "-c", str(path)]) == 0


def test_median_frequency_balancing() -> None:
    assert median_frequency_weights(np.array([60, 30, 10, 0])) == [0.5, 1.0, 3.0, 0.0]  # median of 0.6, 0.3, 0.1
    assert median_frequency_weights(np.array([0, 0])) == [0.0, 0.0]


def test_stats_of_scenes_are_numpy_s_over_every_pixel_and_a_sample_of_windows_is_spread(
    make_scenes: Callable[..., Scenes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Scenes of 384x320 and 256x448 in windows of 128 (the last ones overlapping their neighbours): every pixel
    counts once, as NumPy counts the whole arrays."""
    scenes = make_scenes()
    config = make_config(
        scenes.csv,
        str(tmp_path / "out"),
        data_source={"val_file": scenes.csv, "patch_size": 128, "class_labels": ["a", "b", "c"]},
    )
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    assert cli.main(["stats", "-c", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    pixels = np.concatenate([image.reshape(3, -1) for image in scenes.images], axis=1).astype(np.float64) / 255
    for split in ("train", "val"):
        stats = printed["data_source"]["normalization_weights"][split]
        assert stats["mean"] == pytest.approx(pixels.mean(axis=1).tolist(), abs=1e-6)
        assert stats["std"] == pytest.approx(pixels.std(axis=1).tolist(), abs=1e-6)
    counts = np.bincount(np.concatenate([classes.ravel() for classes in scenes.classes]), minlength=3)
    assert printed["train_setup"]["class_imbalance"] == median_frequency_weights(counts)

    from odeon_job.tasks.stats import chosen_items

    assert chosen_items(15, 4).tolist() == [0, 5, 9, 14] and chosen_items(3, 10).tolist() == [0, 1, 2]
    assert cli.main(["stats", "-c", str(path), "--windows", "4"]) == 0
    sampled = json.loads(capsys.readouterr().out)["data_source"]["normalization_weights"]["train"]
    assert sampled["mean"] != printed["data_source"]["normalization_weights"]["train"]["mean"]
    assert sampled["mean"] == pytest.approx(pixels.mean(axis=1).tolist(), abs=0.05)  # a sample, near the truth


def test_stats_count_only_the_pixels_the_loss_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An image's black border labelled nodata in its mask is left out of the band statistics, as of the loss."""
    from conftest import write_tif

    rng = np.random.default_rng(0)
    rows, scored = [], []
    for i in range(3):
        image = rng.integers(50, 200, (3, 32, 32), dtype=np.uint8)
        image[:, :, :8] = 0  # a nodata border
        classes = rng.integers(0, 2, (32, 32), dtype=np.uint8)
        classes[:, :8] = 255  # labelled nodata
        write_tif(tmp_path / f"i{i}.tif", image)
        write_tif(tmp_path / f"m{i}.tif", classes[None], nodata=255)
        rows.append(f"i{i}.tif,m{i}.tif")
        scored.append(image[:, :, 8:].reshape(3, -1))
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    config = make_config(
        str(tmp_path / "t.csv"),
        str(tmp_path / "out"),
        data_source={"val_file": str(tmp_path / "t.csv"), "class_labels": ["a", "b"]},
    )
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    assert cli.main(["stats", "-c", str(path)]) == 0
    stats = json.loads(capsys.readouterr().out)["data_source"]["normalization_weights"]["train"]
    pixels = np.concatenate(scored, axis=1).astype(np.float64) / 255
    assert stats["mean"] == pytest.approx(pixels.mean(axis=1).tolist(), abs=1e-6)
    assert stats["std"] == pytest.approx(pixels.std(axis=1).tolist(), abs=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--windows", "0"], "argument --windows: 0: give 1 or more"),
        (["--windows", "-3"], "argument --windows: -3: give 1 or more"),
        (["--rows", "-1"], "argument --rows: -1: give 1 or more"),
        (["--rows", "x"], "argument --rows: 'x' is not a whole number"),
    ],
)
def test_stats_counts_below_one_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["stats", "-c", "c.json", *args])
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_stats_windows_without_scenes_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(make_config("t.csv", str(tmp_path / "out"))))
    assert cli.main(["stats", "-c", str(path), "--windows", "4"]) == 2
    assert capsys.readouterr().err == (
        "odeon: error: --windows samples the windows of scenes: set "
        "data_source.patch_size too (tiles are read whole; --rows takes the first rows "
        "of each split)\n"
    )
