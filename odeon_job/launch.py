"""``device_setup`` → Lightning Trainer settings (accelerator, devices, nodes, strategy).

The specification's conventions: ``device: 0`` means the CPU; an int is a number of devices, a
string of digits one device id ("0" is ``cuda:0``), a list the ids. With ``accelerator: cpu``,
``num_processes`` is the number of processes.
"""

from __future__ import annotations

from typing import Any

import torch

from odeon_job.config import DeviceSetup
from odeon_job.errors import ConfigError


def _gpu_devices(device: int | str | list[int] | None) -> int | list[int]:
    if device is None:
        return 1
    if isinstance(device, str):
        return [int(part) for part in device.split(",") if part.strip()]
    return device


def _check_gpus(devices: int | list[int]) -> None:
    available = torch.cuda.device_count()
    if not torch.cuda.is_available() or available == 0:
        raise ConfigError("device_setup.accelerator: a GPU is asked for, but none is visible to this process "
                          "(torch.cuda.is_available() is False); use \"cpu\", or \"auto\" to take a GPU when "
                          "there is one")
    wanted = max(devices) + 1 if isinstance(devices, list) else max(devices, 1)  # -1: all of them
    if wanted > available:
        raise ConfigError(f"device_setup.device: {devices} asks for more GPUs than the {available} visible here")


def trainer_devices(setup: DeviceSetup) -> dict[str, Any]:
    """The Trainer keyword arguments that place the training on devices."""
    accelerator = {"cuda": "gpu", None: "auto"}.get(setup.accelerator, setup.accelerator)
    if setup.device == 0:
        accelerator = "cpu"
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    devices: int | str | list[int]
    if accelerator == "cpu":
        devices = setup.num_processes
    elif accelerator == "gpu":
        devices = _gpu_devices(setup.device)
        _check_gpus(devices)
    else:
        devices = setup.device if setup.device is not None else "auto"
    return {"accelerator": accelerator, "devices": devices, "num_nodes": setup.num_nodes,
            "strategy": setup.strategy or "auto"}
