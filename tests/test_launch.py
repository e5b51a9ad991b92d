from __future__ import annotations

from typing import Any

import pytest
import torch

from odeon_job.config import DeviceSetup
from odeon_job.errors import ConfigError
from odeon_job.launch import trainer_devices


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
    assert _devices(accelerator="cpu", num_processes=2) == {"accelerator": "cpu", "devices": 2, "num_nodes": 1,
                                                             "strategy": "auto"}


def test_device_0_means_cpu(two_gpus: None) -> None:
    assert _devices(accelerator="gpu", device=0)["accelerator"] == "cpu"


def test_auto_takes_a_gpu_when_there_is_one(two_gpus: None) -> None:
    assert _devices()["accelerator"] == "gpu" and _devices()["devices"] == 1


def test_auto_falls_back_to_cpu(no_gpu: None) -> None:
    assert _devices()["accelerator"] == "cpu"


@pytest.mark.parametrize(("device", "devices"), [(None, 1), (2, 2), (-1, -1), ("0", [0]), ("0,1", [0, 1]),
                                                  ([1], [1])])
def test_gpu_device_forms(two_gpus: None, device: Any, devices: Any) -> None:
    result = _devices(accelerator="gpu", device=device, strategy="ddp", num_nodes=2)
    assert (result["devices"], result["strategy"], result["num_nodes"]) == (devices, "ddp", 2)


def test_gpu_without_gpu_is_a_clear_error(no_gpu: None) -> None:
    with pytest.raises(ConfigError, match=r"device_setup.accelerator: a GPU is asked for, but none is visible"):
        _devices(accelerator="gpu", device=1)


def test_more_gpus_than_visible(two_gpus: None) -> None:
    with pytest.raises(ConfigError, match=r"device_setup.device: \[3\] asks for more GPUs than the 2 visible"):
        _devices(accelerator="gpu", device=[3])
