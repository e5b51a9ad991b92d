"""Two processes (DDP on the CPU, gloo) against one, on the same data and weights: started by
Lightning, by torchrun from the PyTorchJob operator's PET_* variables (two "pods" on 127.0.0.1), and
as one ``odeon train`` per "pod" given the operator's MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import TinyDataset, make_config
from mlflow_server import free_port

pytestmark = pytest.mark.slow


def _train(config: dict, folder: Path) -> subprocess.CompletedProcess[str]:
    path = folder / f"{config['output_setup']['version_name']}.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [sys.executable, "-m", "odeon_job", "train", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def _train_as_pods(config: dict, folder: Path, style: str) -> list[subprocess.CompletedProcess[str]]:
    """Two "pods" of a PyTorchJob (Master + 1 Worker) as processes on 127.0.0.1, with the variables the
    operator gives each pod; ``style`` "torchrun" starts through torchrun (the chart's way), "pod" runs
    ``odeon train`` directly."""
    path = folder / f"{config['output_setup']['version_name']}.json"
    path.write_text(json.dumps(config))
    port = free_port()
    if style == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "-m", "odeon_job", "train", "-c", str(path)]
    else:
        command = [sys.executable, "-m", "odeon_job", "train", "-c", str(path)]
    jobs = []
    for pod in range(2):
        env = {
            **os.environ,
            "PYTHONWARNINGS": "ignore",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": "2",
            "RANK": str(pod),
            "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": str(port),
            "PET_NNODES": "2",
            "PET_NODE_RANK": str(pod),
            "PET_NPROC_PER_NODE": "1",
        }
        jobs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for job in jobs:
        try:
            stdout, stderr = job.communicate(timeout=900)
        finally:
            job.kill()
        results.append(subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr))
    return results


def test_two_processes_give_the_confusion_matrix_of_one(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    train = make_dataset(n=8)
    val = make_dataset(n=5, name="val", seed=3)  # 5 tiles: 3 for one process, 2 for the other

    def config(processes: int) -> dict:
        # SGD at 1e-30 cannot move float32 weights: both runs validate the same initial model.
        return make_config(
            train.csv,
            str(tmp_path / "out"),
            data_source={"val_file": val.csv},
            train_setup={"optimizer_config": {"optimizer": "sgd"}, "lr": 1e-30},
            output_setup={"version_name": f"p{processes}", "use_tensorboard": False, "use_mlflow": True},
            device_setup={"num_processes": processes, "strategy": "ddp" if processes > 1 else None},
        )

    results = {n: _train(config(n), tmp_path) for n in (1, 2)}
    for n, result in results.items():
        assert result.returncode == 0, f"{n} process(es): {result.stderr[-3000:]}"
    assert "Starting with 2 processes" in results[2].stderr and "GLOBAL_RANK: 1" in results[2].stderr
    assert results[2].stderr.count("data: 8 train, 5 val") == 1  # only the first process prints
    one, two = (json.loads((tmp_path / "out" / "exp" / f"p{n}" / "history_val.json").read_text())["0"] for n in (1, 2))
    assert two["cm_micro"] == one["cm_micro"]
    assert sum(map(sum, one["cm_micro"])) == 5 * 32 * 32  # every validation pixel counted once
    assert two["Average/IoU"] == pytest.approx(one["Average/IoU"])
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    run = tmp_path / "out" / "exp" / "p2"
    assert sorted(os.listdir(run)) == [
        "config.json",
        "figures",  # the training curves, drawn once, by the first process
        "history_val.json",
        "mlflow_run.json",
        "model_card.md",  # written once, by the first process
        "odeon_val_loss_ckpt",
        "odeon_val_miou_ckpt",
    ]
    assert len(os.listdir(run / "odeon_val_loss_ckpt")) == 2  # the best and last.ckpt
    assert sorted(os.listdir(tmp_path / "out" / "exp")) == ["p1", "p2"]
    # Only the first process talks to MLflow: one run per training, each finished.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [("exp/p1", "FINISHED"), ("exp/p2", "FINISHED")]
    p2 = next(r for r in runs if r.info.run_name == "exp/p2")
    assert [m.value for m in client.get_metric_history(p2.info.run_id, "val/loss")] == [two["loss"]]


@pytest.mark.parametrize("style", ["torchrun", "pod"])
def test_two_pods_give_the_confusion_matrix_of_one(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, style: str
) -> None:
    train = make_dataset(n=8)
    val = make_dataset(n=5, name="val", seed=3)

    def config(version: str, nodes: int) -> dict:
        return make_config(
            train.csv,
            str(tmp_path / "out"),
            data_source={"val_file": val.csv},
            train_setup={"optimizer_config": {"optimizer": "sgd"}, "lr": 1e-30, "epochs": 2},
            output_setup={"version_name": version, "use_tensorboard": False},
            device_setup={"num_nodes": nodes},
        )

    single = _train(config("one", 1), tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    pods = _train_as_pods(config("pods", 2), tmp_path, style)
    for pod, result in enumerate(pods):
        assert result.returncode == 0, f"pod {pod}: {result.stderr[-3000:]}"
    both = pods[0].stderr + pods[1].stderr
    assert "GLOBAL_RANK: 0" in both and "GLOBAL_RANK: 1" in both
    if style == "pod":
        assert "PyTorchJob: pod 1 of 2, 1 process(es) each" in pods[1].stderr
    one, two = (
        json.loads((tmp_path / "out" / "exp" / name / "history_val.json").read_text()) for name in ("one", "pods")
    )
    assert list(two) == ["0", "1"]
    for epoch in ("0", "1"):
        assert two[epoch]["cm_micro"] == one[epoch]["cm_micro"]
        assert two[epoch]["loss"] == pytest.approx(one[epoch]["loss"], rel=1e-5)
    run = tmp_path / "out" / "exp" / "pods"
    assert sorted(os.listdir(run)) == [
        "config.json",
        "figures",
        "history_val.json",
        "model_card.md",
        "odeon_val_loss_ckpt",
        "odeon_val_miou_ckpt",
    ]
    # save_top_k 3: both epochs, last.ckpt and the one before it
    checkpoints = sorted(os.listdir(run / "odeon_val_loss_ckpt"))
    assert len(checkpoints) == 4 and checkpoints[:2] == ["last-previous.ckpt", "last.ckpt"]
    assert not any(re.search(r"-v\d+\.ckpt$", name) for name in checkpoints)  # no second writer's copies
    assert sorted(os.listdir(tmp_path / "out" / "exp")) == ["one", "pods"]


def test_a_pod_count_that_disagrees_with_the_config_is_refused(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    train = make_dataset(n=8)
    config = make_config(
        train.csv, str(tmp_path / "out"), output_setup={"version_name": "pods"}, device_setup={"num_nodes": 3}
    )
    pods = _train_as_pods(config, tmp_path, "pod")
    for result in pods:
        assert result.returncode == 2
        assert (
            "odeon: error: device_setup: the PyTorchJob says WORLD_SIZE=2, but the configuration asks for num_nodes 3"
        ) in result.stderr
