"""Every configuration of examples/ works as written, against data the test makes in its layout: the trainings
pass `odeon validate`, the chart's values render, the prediction writes its maps."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
import yaml

from odeon_job.commands import cli
from odeon_job.config import load_config

from conftest import make_config, paint, scene_class_map, split_csvs, write_scene

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def test_every_example_is_tested_here() -> None:
    text = Path(__file__).read_text()
    for example in EXAMPLES.iterdir():
        assert f'"{example.name}"' in text, f"{example.name} has no test"


def _validates(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", "-c", str(path)]) == 0, capsys.readouterr().err
    assert "OK:" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["tiles-on-disk.yaml", "from-odeon.json"])
def test_tile_examples_validate_as_written(
    name: str, make_dataset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    split_csvs(make_dataset, tmp_path)
    monkeypatch.chdir(tmp_path)
    _validates(EXAMPLES / name, capsys)
    if name == "from-odeon.json":  # ODEON's place for it, read where it belongs
        assert load_config(str(EXAMPLES / name)).train_setup.export_checkpoint == ["odeon_pth"]


def _scenes_in(bucket: Any, tmp_path: Path, bands: int, classes: int) -> None:
    """One 1024² scene per split at 0.5 m under the bucket's ``datasets/2026/``, with its CSV."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "scenes"
    for split in ("train", "val", "test"):
        truth = scene_class_map(rng, 1024, 1024, classes)
        write_scene(folder / split / "image.tif", paint(truth, rng, bands=bands), 256, pixel=0.5)
        write_scene(folder / split / "mask.tif", truth[None], 256, pixel=0.5)
        (folder / f"{split}.csv").write_text(f"{split}/image.tif,{split}/mask.tif\n")
    bucket.upload_folder(folder, "datasets/2026")


def _in_bucket(text: str, bucket: Any) -> str:
    return text.replace("s3://landcover/", bucket.url(""))


@pytest.mark.slow
def test_the_scenes_on_s3_example_validates_as_written(
    bucket: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _scenes_in(bucket, tmp_path, bands=4, classes=5)
    path = tmp_path / "scenes-on-s3.json"
    path.write_text(_in_bucket((EXAMPLES / "scenes-on-s3.json").read_text(), bucket))
    assert json.loads(path.read_text())["output_setup"]["output_folder"].startswith(bucket.url(""))
    _validates(path, capsys)


@pytest.mark.slow
def test_the_chart_values_example_renders_and_its_configuration_validates(
    bucket: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    example = EXAMPLES / "gpus-and-pods.values.yaml"
    rendered = subprocess.run(
        ["helm", "template", "landcover-32", str(ROOT / "helm" / "odeon-train"), "-f", str(example)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    job = next(doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "PyTorchJob")
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3

    # Its configuration, with the encoder's ImageNet file where torchvision keeps it (a generated stand-in).
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), checkpoints / "resnet50-11ad3fa6.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _scenes_in(bucket, tmp_path, bands=3, classes=5)
    config = yaml.safe_load(_in_bucket(example.read_text(), bucket))["config"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    _validates(path, capsys)


@pytest.mark.slow
def test_the_predict_example_maps_a_folder_of_orthophotos(
    make_dataset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_dataset(n=6)
    run = tmp_path / "runs"
    config = make_config(data.csv, str(run), output_setup={"name_exp_log": "landcover", "version_name": "resnet34-a"})
    (tmp_path / "train.json").write_text(json.dumps(config))
    assert cli.main(["train", "-c", str(tmp_path / "train.json")]) == 0
    orthophotos = tmp_path / "orthophotos"
    orthophotos.mkdir()
    for image in data.images[:3]:
        shutil.copy(image, orthophotos / Path(image).name)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["predict", "-c", str(EXAMPLES / "predict-orthophotos.yaml")]) == 0
    assert sorted(path.name for path in (tmp_path / "maps").glob("*.tif")) == ["0.tif", "1.tif", "2.tif"]
