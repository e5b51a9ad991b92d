"""``device_setup`` → Lightning Trainer settings (accelerator, devices, nodes, strategy), and the
launch environment of a distributed run.

The specification's conventions: ``device: 0`` means the CPU; an int is a number of devices, a
string of digits one device id ("0" is ``cuda:0``), a list the ids. With ``accelerator: cpu``,
``num_processes`` is the number of processes.

Three ways to start several processes, all checked against ``num_nodes`` × devices per node:

- Lightning alone (one pod or machine): ``odeon train`` starts the other processes itself.
- ``torchrun`` (the Helm chart's way, and the only one under Kubeflow Trainer v2): torchrun reads the
  operator's ``PET_*`` variables and starts the processes of its pod; Lightning recognises torchrun.
- one ``odeon train`` per pod of a PyTorchJob, given ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``
  and ``RANK`` (the pod's index) by the operator. Lightning does not recognise these (both pods
  would take rank 0), so the pod's index becomes ``NODE_RANK`` and Lightning starts the pod's
  processes as on one machine.

This module is also the one home of how this process was started: whether it is the first process,
and what the first process hands to the processes Lightning starts (the validated configuration, the
run folder's names), which cannot read them again themselves (a configuration from the standard
input, a clock of their own).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.util
import logging
import os
from collections.abc import Iterator
from typing import Any

from odeon_job.config import DeviceSetup, JobConfig, is_folder_name, parse_config
from odeon_job.errors import ConfigError, quote

log = logging.getLogger("odeon")

#: Variables the Kubeflow training operator gives every pod of a PyTorchJob.
POD_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")
#: The validated configuration, handed by the first process to the processes Lightning starts for DDP.
INHERITED_CONFIG = "ODEON_RESOLVED_CONFIG"
#: The run folder's names (``name_exp_log/version_name``), handed the same way.
RUN_NAMES_VARIABLE = "ODEON_RUN_NAMES"
#: The job's name (set by the Helm chart): names the run folder when the configuration does not.
JOB_NAME_VARIABLE = "ODEON_JOB_NAME"


def is_first_process() -> bool:
    """False in the other processes of a distributed run (started by Lightning, torchrun or a PyTorchJob)."""
    return all(os.environ.get(variable, "0") == "0" for variable in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def is_first_on_this_machine() -> bool:
    """True in the first process of this machine or pod (the one whose console lines are read: each pod has a log
    of its own, shared by its processes); :func:`is_first_process` is the first of the whole run."""
    return os.environ.get("LOCAL_RANK", "0") == "0"


def inherited_config() -> JobConfig | None:
    """The configuration the first process handed over, in a process it started; else None."""
    inherited = os.environ.get(INHERITED_CONFIG)
    if inherited and not is_first_process():
        return parse_config(inherited, "configuration of the first process")
    return None


def hand_over_config(config: JobConfig) -> None:
    """For the processes this one will start (they inherit its environment): the keys the user set, as set, so that
    each process reads them as the first did (every key written out would read as set by the user: ``device: 2``
    on the CPU met a ``num_processes: 1`` of its own making in the other processes)."""
    os.environ[INHERITED_CONFIG] = config.model_dump_json(exclude_unset=True)


#: What this process hands the processes it starts, through the environment they inherit.
HANDED_OVER = (INHERITED_CONFIG, RUN_NAMES_VARIABLE)


@contextlib.contextmanager
def handing_over() -> Iterator[None]:
    """What a command hands its processes lasts as long as the command: a training run inside a longer process (a
    notebook, a test, ``evaluate``) would otherwise leave its run's names for the next one's processes to take."""
    saved = {name: os.environ.get(name) for name in HANDED_OVER}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def hand_over_run_names(config: JobConfig) -> None:
    out = config.output_setup
    os.environ[RUN_NAMES_VARIABLE] = f"{out.name_exp_log}/{out.version_name}"


def with_run_names(config: JobConfig) -> JobConfig:
    """``config`` with its run folder's names: the first process's when it started this one, else those the
    configuration gives, else the job's (``ODEON_JOB_NAME``: pods do not share a clock, and a restarted pod
    must find its run to resume it), else the start date and time."""
    inherited = os.environ.get(RUN_NAMES_VARIABLE)
    if inherited and not is_first_process():
        experiment, version = inherited.split("/", 1)
        names = {"name_exp_log": experiment, "version_name": version}
        return config.model_copy(update={"output_setup": config.output_setup.model_copy(update=names)})
    out = config.output_setup
    job = os.environ.get(JOB_NAME_VARIABLE)
    if job and not is_folder_name(job):
        raise ConfigError(
            f"{JOB_NAME_VARIABLE}={quote(job)} in the environment: must be a single folder name (it "
            "names the run folder inside output_folder)"
        )
    if job and not (out.name_exp_log and out.version_name):  # one name whatever the pod and its restarts
        names = {"name_exp_log": out.name_exp_log or job, "version_name": out.version_name or job}
        config = config.model_copy(update={"output_setup": out.model_copy(update=names)})
    elif config.device_setup.num_nodes > 1 and not (out.name_exp_log and out.version_name):
        raise ConfigError(
            "output_setup.version_name: set name_exp_log and version_name when training on "
            f"{config.device_setup.num_nodes} nodes (each would otherwise name the run after its "
            f"own clock), or set {JOB_NAME_VARIABLE}"
        )
    return resolve_run_names(config)


def resolve_run_names(config: JobConfig, now: _dt.datetime | None = None) -> JobConfig:
    """Fill ``name_exp_log`` and ``version_name`` with the start date and time when absent."""
    now = now or _dt.datetime.now()
    output = config.output_setup
    names = {
        "name_exp_log": output.name_exp_log or now.strftime("%Y-%m-%d"),
        "version_name": output.version_name or now.strftime("%H-%M-%S"),
    }
    return config.model_copy(update={"output_setup": output.model_copy(update=names)})


def _gpu_devices(device: int | str | list[int] | None) -> int | list[int]:
    if device is None:
        return 1
    if isinstance(device, str):
        return [int(part) for part in device.split(",") if part.strip()]
    return device


def _check_gpus(devices: int | list[int]) -> None:
    import torch

    available = torch.cuda.device_count()
    if not torch.cuda.is_available() or available == 0:
        raise ConfigError(
            "device_setup.accelerator: a GPU is asked for, but none is visible to this process "
            '(torch.cuda.is_available() is False); use "cpu", or "auto" to take a GPU when '
            "there is one"
        )
    wanted = max(devices) + 1 if isinstance(devices, list) else max(devices, 1)  # -1: all of them
    if wanted > available:
        raise ConfigError(f"device_setup.device: {devices} asks for more GPUs than the {available} visible here")


def _check_accelerator(accelerator: str) -> None:
    """Accelerators this installation cannot drive are refused by name (Lightning would fail with an
    import traceback after start-up)."""
    import torch

    if accelerator == "tpu" and importlib.util.find_spec("torch_xla") is None:
        raise ConfigError(
            'device_setup.accelerator: "tpu" needs the torch_xla package, which this installation '
            'lacks; use "gpu" or "cpu"'
        )
    if accelerator in ("ipu", "hpu"):
        raise ConfigError(
            f'device_setup.accelerator: "{accelerator}" needs its vendor\'s Lightning plugin, which '
            'this job does not ship; use "gpu" or "cpu"'
        )
    if accelerator == "mps" and not (torch.backends.mps.is_available()):
        raise ConfigError(
            'device_setup.accelerator: "mps" (Apple GPUs) is not available on this machine; use "gpu" or "cpu"'
        )


def _cpu_processes(setup: DeviceSetup, explicit_cpu: bool) -> int:
    """Processes on the CPU: ``device``, which the specification maps to ``num_processes`` for the CPU
    accelerator, else ``num_processes``."""
    device = setup.device
    if device in (None, 0):
        return setup.num_processes
    if not explicit_cpu:  # "auto" on a machine without a GPU: the GPU ids or count cannot apply
        log.warning(
            "device_setup.device: %s asks for GPUs, but none is visible: training on the CPU with %d "
            "process(es) (num_processes)",
            device,
            setup.num_processes,
        )
        return setup.num_processes
    if isinstance(device, int) and device > 0:
        if "num_processes" in setup.model_fields_set and setup.num_processes != device:
            raise ConfigError(
                f"device_setup.device: {device} processes on the CPU, but num_processes says "
                f"{setup.num_processes}; give one of them"
            )
        return device
    raise ConfigError(
        f'device_setup.device: {device!r} names GPUs, but accelerator is "cpu": give the number of '
        'processes (device: 2, or num_processes: 2), or use accelerator "gpu"'
    )


def trainer_devices(setup: DeviceSetup, on_this_machine: bool = True) -> dict[str, Any]:
    """The Trainer keyword arguments that place the training on devices. ``on_this_machine`` false (``odeon
    validate``, which may run on a laptop or in the chart's CPU-only test pod): the settings are checked,
    not that this machine has the GPUs they ask for."""
    import torch  # here, not at the top: importing this module (the process's identity) needs no torch

    accelerator = {"cuda": "gpu", None: "auto"}.get(setup.accelerator, setup.accelerator) or "auto"
    explicit_cpu = accelerator == "cpu"
    if setup.device == 0:
        accelerator = "cpu"
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    _check_accelerator(accelerator)
    devices: int | str | list[int]
    if accelerator == "cpu":
        devices = _cpu_processes(setup, explicit_cpu)
    elif accelerator == "gpu":
        devices = _gpu_devices(setup.device)
        if on_this_machine:
            _check_gpus(devices)
    else:
        devices = setup.device if setup.device is not None else "auto"
    return {
        "accelerator": accelerator,
        "devices": devices,
        "num_nodes": setup.num_nodes,
        "strategy": setup.strategy or "auto",
    }


def processes_per_node(devices: int | str | list[int]) -> int:
    """How many processes Lightning runs on each node for these ``devices``."""
    import torch

    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, int) and devices > 0:
        return devices
    return torch.cuda.device_count() or 1  # -1 or "auto": all the GPUs of the node


def _int_variable(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} in the environment is not a number") from None


def launch_style() -> str:
    """``torchrun``, ``pytorchjob`` (one process per pod, the operator's variables), ``child`` (a
    process Lightning started) or ``single`` (no distributed launcher around this process)."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return "torchrun"
    if "LOCAL_RANK" in os.environ:
        return "child"
    if all(name in os.environ for name in POD_VARIABLES):
        return "pytorchjob"
    return "single"


def prepare_launch(options: dict[str, Any]) -> str:
    """Check the launch environment against the Trainer's ``options`` and adapt it for Lightning.

    Raises a :class:`ConfigError` naming both sides when the number of processes the launcher
    announces is not ``num_nodes`` × devices per node. Returns the launch style.
    """
    style = launch_style()
    nodes, per_node = options["num_nodes"], processes_per_node(options["devices"])
    expected = nodes * per_node
    if style == "torchrun":
        world, local = _int_variable("WORLD_SIZE"), _int_variable("LOCAL_WORLD_SIZE")
        if (world, local) != (expected, per_node):
            raise ConfigError(
                f"device_setup: torchrun started {world} process(es), {local} per node, but the "
                f"configuration asks for num_nodes {nodes} × {per_node} per node = {expected}; make "
                "num_nodes the number of pods (--nnodes) and device/num_processes the processes per "
                "pod (--nproc-per-node)"
            )
    elif style == "pytorchjob":
        world, pod = _int_variable("WORLD_SIZE"), _int_variable("RANK")
        # Operator versions disagree: WORLD_SIZE counts pods (one process each) or pods × nprocPerNode.
        if world not in (expected, nodes):
            raise ConfigError(
                f"device_setup: the PyTorchJob says WORLD_SIZE={world}, but the configuration asks "
                f"for num_nodes {nodes} × {per_node} process(es) per node = {expected}; set num_nodes "
                "to the number of pods (Master + Workers)"
            )
        if not 0 <= pod < nodes:
            raise ConfigError(f"device_setup.num_nodes: {nodes}, but this pod has RANK={pod}")
        # Lightning starts this pod's processes and numbers them from NODE_RANK; the pod-level RANK
        # and WORLD_SIZE would otherwise be read as this process's own.
        os.environ["NODE_RANK"] = str(pod)
        del os.environ["RANK"], os.environ["WORLD_SIZE"]
        log.info(
            "PyTorchJob: pod %d of %d, %d process(es) each, rendezvous at %s:%s",
            pod,
            nodes,
            per_node,
            os.environ["MASTER_ADDR"],
            os.environ["MASTER_PORT"],
        )
    elif style == "single" and nodes > 1 and "NODE_RANK" not in os.environ:
        raise ConfigError(
            f"device_setup.num_nodes: {nodes} nodes, but no launcher says which node this is: start "
            "through torchrun (--nnodes, --node-rank, or the PET_* variables), in a PyTorchJob "
            "(MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK), or set NODE_RANK, MASTER_ADDR and MASTER_PORT"
        )
    return style
