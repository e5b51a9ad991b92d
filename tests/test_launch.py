from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from odeon_job.commands import cli
from odeon_job.config import DeviceSetup, load_config
from odeon_job.errors import ConfigError
from odeon_job.process.launch import INHERITED_CONFIG, RUN_NAMES_VARIABLE, prepare_launch, trainer_devices
from odeon_job.tasks.train import train

from conftest import make_config


def _devices(**device_setup: Any) -> dict[str, Any]:
    return trainer_devices(DeviceSetup(**device_setup))


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_cpu_runs_num_processes(no_gpu: None) -> None:
    assert _devices(accelerator="cpu", num_processes=2) == {
        "accelerator": "cpu",
        "devices": 2,
        "num_nodes": 1,
        "strategy": "auto",
    }


def test_device_0_means_cpu(two_gpus: None) -> None:
    assert _devices(accelerator="gpu", device=0)["accelerator"] == "cpu"


def test_auto_takes_a_gpu_when_there_is_one(two_gpus: None) -> None:
    assert _devices()["accelerator"] == "gpu" and _devices()["devices"] == 1


def test_auto_falls_back_to_cpu(no_gpu: None) -> None:
    assert _devices()["accelerator"] == "cpu"


@pytest.mark.parametrize(("device", "devices"), [(None, 1), (2, 2), (-1, -1), ("0", [0]), ("0,1", [0, 1]), ([1], [1])])
def test_gpu_device_forms(two_gpus: None, device: Any, devices: Any) -> None:
    result = _devices(accelerator="gpu", device=device, strategy="ddp", num_nodes=2)
    assert (result["devices"], result["strategy"], result["num_nodes"]) == (devices, "ddp", 2)


def test_gpu_without_gpu_is_a_clear_error(no_gpu: None) -> None:
    with pytest.raises(ConfigError, match=r"device_setup.accelerator: a GPU is asked for, but none is visible"):
        _devices(accelerator="gpu", device=1)


def test_more_gpus_than_visible(two_gpus: None) -> None:
    with pytest.raises(ConfigError, match=r"device_setup.device: \[3\] asks for more GPUs than the 2 visible"):
        _devices(accelerator="gpu", device=[3])


# --- launch styles ---------------------------------------------------------------------------------

_LAUNCH_VARIABLES = (
    "TORCHELASTIC_RUN_ID",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "NODE_RANK",
)


@pytest.fixture
def launch_env() -> Iterator[Callable[..., None]]:
    """prepare_launch rewrites the environment: it is restored whole afterwards (a NODE_RANK left behind
    would make every later training in this process a non-first process)."""
    saved = dict(os.environ)
    for name in _LAUNCH_VARIABLES:
        os.environ.pop(name, None)
    yield os.environ.update
    os.environ.clear()
    os.environ.update(saved)


def _options(nodes: int, devices: int) -> dict[str, Any]:
    return {"accelerator": "cpu", "devices": devices, "num_nodes": nodes, "strategy": "auto"}


def test_a_pytorchjob_pod_becomes_a_lightning_node(launch_env: Callable[..., None]) -> None:
    launch_env(MASTER_ADDR="job-master-0", MASTER_PORT="23456", WORLD_SIZE="4", RANK="1")
    assert prepare_launch(_options(nodes=2, devices=2)) == "pytorchjob"
    assert os.environ["NODE_RANK"] == "1" and "RANK" not in os.environ and "WORLD_SIZE" not in os.environ


def test_world_size_may_count_pods(launch_env: Callable[..., None]) -> None:
    """Older operators count pods in WORLD_SIZE even with nprocPerNode."""
    launch_env(MASTER_ADDR="job-master-0", MASTER_PORT="23456", WORLD_SIZE="2", RANK="0")
    assert prepare_launch(_options(nodes=2, devices=2)) == "pytorchjob" and os.environ["NODE_RANK"] == "0"


def test_a_world_size_that_fits_neither_count_is_refused(launch_env: Callable[..., None]) -> None:
    launch_env(MASTER_ADDR="job-master-0", MASTER_PORT="23456", WORLD_SIZE="3", RANK="0")
    with pytest.raises(ConfigError, match=r"WORLD_SIZE=3, but the configuration asks for num_nodes 2 × 2"):
        prepare_launch(_options(nodes=2, devices=2))


def test_torchrun_must_start_what_the_config_asks_for(launch_env: Callable[..., None]) -> None:
    launch_env(TORCHELASTIC_RUN_ID="x", WORLD_SIZE="4", LOCAL_WORLD_SIZE="2", RANK="0", LOCAL_RANK="0")
    assert prepare_launch(_options(nodes=2, devices=2)) == "torchrun"
    with pytest.raises(ConfigError, match=r"torchrun started 4 process\(es\), 2 per node, .* num_nodes 1 × 2"):
        prepare_launch(_options(nodes=1, devices=2))


def test_several_nodes_need_a_launcher(launch_env: Callable[..., None]) -> None:
    with pytest.raises(ConfigError, match=r"device_setup.num_nodes: 2 nodes, but no launcher says which node"):
        prepare_launch(_options(nodes=2, devices=1))
    assert prepare_launch(_options(nodes=1, devices=2)) == "single"


def test_device_with_the_cpu_accelerator_is_the_number_of_processes(
    no_gpu: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The specification maps `device` to num_processes for the CPU: `device: 2` was silently ignored."""
    assert _devices(accelerator="cpu", device=2)["devices"] == 2
    assert _devices(accelerator="cpu", device=2, num_processes=2)["devices"] == 2
    assert _devices(accelerator="cpu", num_processes=3)["devices"] == 3
    assert _devices(device=0, num_processes=2)["devices"] == 2  # device 0 is the CPU
    with pytest.raises(ConfigError, match=r"device_setup.device: 2 processes on the CPU, but num_processes says 3"):
        _devices(accelerator="cpu", device=2, num_processes=3)
    with pytest.raises(ConfigError, match=r"device_setup.device: \[0, 1\] names GPUs, but accelerator is \"cpu\""):
        _devices(accelerator="cpu", device=[0, 1])
    with caplog.at_level("WARNING", logger="odeon"):  # "auto" without a GPU: said, not silent
        assert _devices(device=2)["devices"] == 1
    assert "asks for GPUs, but none is visible" in caplog.text


@pytest.mark.parametrize(
    ("accelerator", "message"),
    [
        ("tpu", "needs the torch_xla package"),
        ("ipu", "needs its vendor's Lightning plugin"),
        ("hpu", "needs its vendor's Lightning plugin"),
        ("mps", r"\(Apple GPUs\) is not available"),
    ],
)
def test_accelerators_this_install_cannot_drive_are_refused_by_name(accelerator: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"device_setup.accelerator: \"{accelerator}\" {message}"):
        _devices(accelerator=accelerator)


def test_the_processes_lightning_starts_read_the_configuration_as_the_first_did(
    no_gpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """device: 2 on the CPU (no num_processes) is two processes; the configuration handed to the second process
    said num_processes: 1 as if the user had set it, and it refused to start after the run folder was written."""
    from odeon_job.config import config_from_dict
    from odeon_job.process.launch import INHERITED_CONFIG, hand_over_config, inherited_config

    from conftest import make_config

    config = config_from_dict(make_config("t.csv", "out", device_setup={"accelerator": "cpu", "device": 2}))
    assert trainer_devices(config.device_setup)["devices"] == 2
    monkeypatch.delenv(INHERITED_CONFIG, raising=False)
    hand_over_config(config)
    monkeypatch.setenv("LOCAL_RANK", "1")
    child = inherited_config()
    assert child is not None and child == config
    assert trainer_devices(child.device_setup)["devices"] == 2


def test_what_a_command_hands_its_processes_does_not_outlive_it(
    make_dataset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A training run inside a longer process (a notebook, a test, evaluate) left ODEON_RUN_NAMES behind: the
    next training's DDP processes, or pods started from that process, took the old run's names."""
    monkeypatch.delenv(INHERITED_CONFIG, raising=False)
    monkeypatch.delenv(RUN_NAMES_VARIABLE, raising=False)
    data = make_dataset(n=4)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(make_config(data.csv, str(tmp_path / "out"))))
    handler = signal.getsignal(signal.SIGTERM)
    assert cli.main(["train", "-c", str(path)]) == 0
    assert RUN_NAMES_VARIABLE not in os.environ and INHERITED_CONFIG not in os.environ
    assert signal.getsignal(signal.SIGTERM) == handler  # nor does its SIGTERM handler
    monkeypatch.setenv(RUN_NAMES_VARIABLE, "a/b")  # one the caller set stays as it was
    train(load_config(str(path), ["output_setup.version_name=w"]))
    assert os.environ[RUN_NAMES_VARIABLE] == "a/b" and INHERITED_CONFIG not in os.environ
