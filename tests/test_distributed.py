"""Two processes (DDP on the CPU, gloo) against one, on the same data and weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import TinyDataset, make_config

pytestmark = pytest.mark.slow


def _train(config: dict, folder: Path) -> subprocess.CompletedProcess[str]:
    path = folder / f"{config['output_setup']['version_name']}.json"
    path.write_text(json.dumps(config))
    return subprocess.run([sys.executable, "-m", "odeon_job", "train", "-c", str(path)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_two_processes_give_the_confusion_matrix_of_one(make_dataset: Callable[..., TinyDataset],
                                                        tmp_path: Path) -> None:
    train = make_dataset(n=8)
    val = make_dataset(n=5, name="val", seed=3)  # 5 tiles: 3 for one process, 2 for the other

    def config(processes: int) -> dict:
        # SGD at 1e-30 cannot move float32 weights: both runs validate the same initial model.
        return make_config(train.csv, str(tmp_path / "out"), data_source={"val_file": val.csv},
                           train_setup={"optimizer_config": {"optimizer": "sgd"}, "lr": 1e-30},
                           output_setup={"version_name": f"p{processes}", "use_tensorboard": False,
                                         "use_mlflow": True},
                           device_setup={"num_processes": processes, "strategy": "ddp" if processes > 1 else None})

    results = {n: _train(config(n), tmp_path) for n in (1, 2)}
    for n, result in results.items():
        assert result.returncode == 0, f"{n} process(es): {result.stderr[-3000:]}"
    assert "Starting with 2 processes" in results[2].stderr and "GLOBAL_RANK: 1" in results[2].stderr
    one, two = (json.loads((tmp_path / "out" / "exp" / f"p{n}" / "history_val.json").read_text())["0"]
                for n in (1, 2))
    assert two["cm_micro"] == one["cm_micro"]
    assert sum(map(sum, one["cm_micro"])) == 5 * 32 * 32  # every validation pixel counted once
    assert two["Average/IoU"] == pytest.approx(one["Average/IoU"])
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    run = tmp_path / "out" / "exp" / "p2"
    assert sorted(os.listdir(run)) == ["config.json", "history_val.json", "mlflow_run.json", "odeon_val_loss_ckpt",
                                       "odeon_val_miou_ckpt"]
    assert len(os.listdir(run / "odeon_val_loss_ckpt")) == 2  # the best and last.ckpt
    assert sorted(os.listdir(tmp_path / "out" / "exp")) == ["p1", "p2"]
    # Only the first process talks to MLflow: one run per training, each finished.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [("p1", "FINISHED"), ("p2", "FINISHED")]
    p2 = next(r for r in runs if r.info.run_name == "p2")
    assert [m.value for m in client.get_metric_history(p2.info.run_id, "val/loss")] == [two["loss"]]
