"""``odeon evaluate``: a model scored on a labelled CSV through the test phase's own code (the same history entry,
figures and maps as the training's test), and the promotion gate: exit 3 when the new model is worse."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio

from odeon_job.commands import cli
from odeon_job.config import config_from_dict
from odeon_job.tasks.train import train

from conftest import Scenes, TinyDataset, make_config

pytestmark = pytest.mark.slow


def _train(data: TinyDataset, test: TinyDataset, output: Path, epochs: int, lr: float) -> str:
    config = make_config(
        data.csv,
        str(output),
        data_source={"test_file": test.csv, "class_labels": ["a", "b", "c"]},
        train_setup={"epochs": epochs, "lr": lr},
        output_setup={"get_prediction": True, "prediction_output_type": "class"},
    )
    return train(config_from_dict(config)).run_folder


def test_evaluate_reproduces_the_training_s_test_and_the_gate_keeps_the_better_model(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, test = make_dataset(n=8), make_dataset(n=3, name="test", seed=1)
    good = _train(data, test, tmp_path / "good", epochs=6, lr=0.01)
    poor = _train(data, test, tmp_path / "poor", epochs=1, lr=1e-7)

    report = tmp_path / "report"
    assert cli.main(["evaluate", "--model", good, "--data", test.csv, "--output", str(report)]) == 0
    evaluated = next(iter(json.loads((report / "history_test.json").read_text()).values()))
    trained = next(iter(json.loads((Path(good) / "history_test.json").read_text()).values()))
    assert evaluated == trained  # every figure, both matrices, the loss: to the last digit
    assert sorted(p.name for p in (report / "figures").iterdir()) == [
        "confusion_matrix_test.png",
        "iou_test.png",
        "samples_test.png",
    ]
    assert sorted(p.name for p in (report / "predictions").glob("*.tif")) == ["0.tif", "1.tif", "2.tif"]
    assert sorted(p.name for p in (Path(good) / "figures").iterdir()) == [
        "confusion_matrix_test.png",
        "iou_test.png",
        "samples_test.png",
        "training_curves.png",
    ]

    assert_error_maps_count_the_confusion_matrix(report, evaluated, n_classes=3)

    poor_miou = json.loads((Path(poor) / "history_test.json").read_text())
    assert next(iter(poor_miou.values()))["Average/IoU"] < trained["Average/IoU"] - 0.05
    capsys.readouterr()
    gate = ["evaluate", "--data", test.csv, "--num-workers", "0"]
    assert cli.main([*gate, "--model", poor, "--against", good, "--output", str(tmp_path / "g1")]) == 3
    printed = capsys.readouterr().out
    assert "not promoted" in printed and "a/IoU" in printed and "<- gate" in printed
    assert cli.main([*gate, "--model", good, "--against", poor, "--output", str(tmp_path / "g2")]) == 0
    assert "promote it" in capsys.readouterr().out
    # a margin lets a slightly worse model through; the loss gate: lower wins
    margin = str(trained["Average/IoU"])
    assert (
        cli.main([*gate, "--model", poor, "--against", good, "--output", str(tmp_path / "g3"), "--margin", margin]) == 0
    )
    assert (
        cli.main([*gate, "--model", poor, "--against", good, "--output", str(tmp_path / "g4"), "--metric", "loss"]) == 3
    )


def assert_error_maps_count_the_confusion_matrix(report: Path, entry: dict, n_classes: int) -> None:
    """Every error map's codes, counted over the test, are the confusion matrix; scenes.csv's rows add up to it; each
    error map lies on its prediction's grid and says what its codes mean."""
    confusion = np.zeros((n_classes, n_classes), np.int64)
    rows = list(csv.DictReader((report / "scenes.csv").open()))
    assert len(rows) == len(list((report / "predictions").glob("*.tif")))
    for row in rows:
        with (
            rasterio.open(report / "errors" / row["map"]) as errors,
            rasterio.open(report / "predictions" / row["map"]) as maps,
        ):
            codes = errors.read(1)
            assert errors.transform == maps.transform and errors.crs == maps.crs and errors.shape == maps.shape
            assert errors.colormap(1)[0][:3] == (255, 255, 255)  # right pixels: white (transparent in QGIS)
        for t in range(n_classes):
            for p in range(n_classes):
                code = 0 if t == p else 1 + t * (n_classes - 1) + p - (p > t)
                count = int((codes == code).sum())
                confusion[t, p] += count if t != p else 0
        right = int((codes == 0).sum())
        assert int(row["right pixels"]) == right and int(row["scored pixels"]) == int((codes != 255).sum())
        confusion[np.diag_indices(n_classes)] += 0
    expected = np.array(entry["cm_micro"])
    off_diagonal = ~np.eye(n_classes, dtype=bool)
    assert (confusion[off_diagonal] == expected[off_diagonal]).all()
    assert sum(int(row["right pixels"]) for row in rows) == np.trace(expected)
    assert sum(int(row["scored pixels"]) for row in rows) == expected.sum()
    qml = (report / "errors" / rows[0]["map"].replace(".tif", ".qml")).read_text()
    assert 'label="a → b"' in qml and 'alpha="0" label="right"' in qml


def test_a_scene_report_s_error_maps_count_what_the_metrics_count_with_overlapping_windows(
    make_scenes: Callable[..., Scenes], tmp_path: Path
) -> None:
    """Scenes in windows that overlap: each pixel is scored by the window that owns it, and so is it in the error
    map (not the averaged class map's prediction)."""
    scenes = make_scenes()
    config = make_config(
        scenes.csv,
        str(tmp_path / "out"),
        data_source={
            "val_file": scenes.csv,
            "test_file": scenes.csv,
            "patch_size": 128,
            "grid_overlap": 48,
            "class_labels": ["a", "b", "c"],
        },
        output_setup={"get_prediction": True, "prediction_output_type": "class"},
    )
    run = Path(train(config_from_dict(config)).run_folder)
    entry = next(iter(json.loads((run / "history_test.json").read_text()).values()))
    assert_error_maps_count_the_confusion_matrix(run, entry, n_classes=3)


def test_evaluate_refuses_a_folder_that_holds_files_and_an_unknown_metric(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, test = make_dataset(n=8), make_dataset(n=2, name="test", seed=1)
    run = _train(data, test, tmp_path / "run", epochs=1, lr=0.01)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("mine")
    assert cli.main(["evaluate", "--model", run, "--data", test.csv, "--output", str(tmp_path / "busy")]) == 2
    assert "already holds files" in capsys.readouterr().err
    arguments = ["--data", test.csv, "--against", run, "--metric", "Average/Nonsense"]
    assert cli.main(["evaluate", "--model", run, "--output", str(tmp_path / "o"), *arguments]) == 2
    assert "is not a figure of the evaluation" in capsys.readouterr().err


def test_the_pipeline_s_promotion_gate_moves_the_alias_only_to_a_better_version(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    """The retrain:promote job's own script (.gitlab-ci.yml), run by bash against a real MLflow store: the first
    version takes the alias, a worse one does not (exit 3, the alias stays)."""
    import os
    import shlex
    import subprocess
    import sys

    import yaml
    from mlflow import MlflowClient

    data, test = make_dataset(n=8), make_dataset(n=3, name="test", seed=1)
    output = tmp_path / "runs"
    store = f"sqlite:///{output}/mlflow.db"
    script = yaml.safe_load((Path(__file__).parents[1] / ".gitlab-ci.yml").read_text())["retrain:promote"]["script"]
    variables = {
        "MODEL_NAME": "landcover",
        "GATE_DATA": test.csv,
        "GATE_OUTPUT": str(tmp_path / "gates"),
        "CHAMPION_ALIAS": "champion",
        "CI_PIPELINE_ID": "1",
        "MLFLOW_TRACKING_URI": store,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }

    def retrain(version: str, epochs: int, lr: float, pipeline: str) -> subprocess.CompletedProcess[str]:
        config = make_config(
            data.csv,
            str(output),
            data_source={"class_labels": ["a", "b", "c"]},
            train_setup={"epochs": epochs, "lr": lr},
            output_setup={"use_mlflow": True, "registered_model_name": "landcover", "version_name": version},
        )
        train(config_from_dict(config))
        lines = "".join(f"{k}={shlex.quote(v)}\n" for k, v in {**variables, "CI_PIPELINE_ID": pipeline}.items())
        return subprocess.run(
            ["bash", "-c", "set -eu\n" + lines + "export MLFLOW_TRACKING_URI PATH MODEL_NAME CHAMPION_ALIAS\n"
             + "\n".join(script)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    first = retrain("good", 6, 0.01, "1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "no champion yet: version 1 takes the alias" in first.stdout
    client = MlflowClient(store)
    assert str(client.get_model_version_by_alias("landcover", "champion").version) == "1"
    worse = retrain("poor", 1, 1e-7, "2")
    assert worse.returncode == 3, worse.stdout + worse.stderr
    assert "not promoted" in worse.stdout
    assert str(client.get_model_version_by_alias("landcover", "champion").version) == "1"
    assert (tmp_path / "gates" / "2" / "history_test.json").exists()
