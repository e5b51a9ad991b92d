"""``odeon evaluate``: a model scored on a labelled CSV through the test phase's own code (the same history entry,
figures and maps as the training's test), and the promotion gate: exit 3 when the new model is worse."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from odeon_job.commands import cli
from odeon_job.config import config_from_dict
from odeon_job.tasks.train import train

from conftest import TinyDataset, make_config

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
