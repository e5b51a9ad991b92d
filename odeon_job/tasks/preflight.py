"""Every check a configuration must pass before a training starts: one code path for ``odeon train`` and
``odeon validate``, so that validate never passes what train refuses at start.

The checks need the CSVs (text only), the first training sample's metadata, torch (optimizer and
scheduler arguments are tried on a dummy parameter) and the devices, but not Lightning.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from odeon_job.config import ODEON_U_NETS, JobConfig
from odeon_job.data.sampler import training_batches
from odeon_job.data.samples import Splits, load_splits
from odeon_job.data.spec import DataSpec, describe_data
from odeon_job.data.windows import GridWindows, WindowPlan, plan_windows
from odeon_job.errors import ConfigError
from odeon_job.outputs.prediction_files import MAX_STITCH_BYTES, widest_band
from odeon_job.process.launch import processes_per_node, trainer_devices
from odeon_job.training.models.weights import encoder_weights_file, fit_to_weights, read_state_dict
from odeon_job.training.optimizers import build_optimizer, build_scheduler

log = logging.getLogger("odeon")

#: Batches per epoch and split when ``train_setup.testing`` is true.
TESTING_BATCHES = 4


@dataclass
class Findings:
    """What the checks found out, for the training to use."""

    #: The configuration, its model parameters fitted to ODEON ``init_weights`` (see ``fit_to_weights``).
    config: JobConfig
    splits: Splits
    spec: DataSpec
    #: The Trainer's accelerator, devices, num_nodes and strategy.
    devices: dict[str, Any]
    #: Processes over all nodes.
    world_size: int
    #: ``init_weights`` / ``encoder_weights`` as loaded (plain tensors), by key.
    weights: dict[str, dict[str, Any]]
    #: Which window of which row each item of a split reads (one item per row for tiles).
    windows: dict[str, WindowPlan] = field(default_factory=dict)


def check_before_training(config: JobConfig, on_this_machine: bool = True, shares: bool = True) -> Findings:
    """Run every check that does not need the run folder; raises the first problem as an OdeonError.

    ``on_this_machine`` false (``odeon validate``): the GPUs asked for need not be visible here. ``shares``
    false: the caller checks the splits' shares per process itself (``check_shares``), once it has checked
    how this process was started (a pod count that contradicts the configuration is the first thing to say)."""

    splits = load_splits(config.data_source, config.train_setup.random_seed)
    spec = describe_data(config.data_source, splits.train[0], config.train_setup.per_class_weights)
    devices = trainer_devices(config.device_setup, on_this_machine)
    check_precision(config, devices["accelerator"])
    world_size = devices["num_nodes"] * processes_per_node(devices["devices"])
    check_stitching(config, splits, world_size)
    windows = plan_windows(splits, spec, config.data_source, config.train_setup.random_seed)
    check_stitching_memory(config, splits, windows, spec)
    check_epoch_size(config, windows)
    check_val_check_interval(config, len(windows["train"]), world_size)
    if shares:
        check_shares(config, windows, world_size)
    check_optimization(config)
    weights = read_weights_files(config)
    config = fit_model_to_weights(config, weights)
    check_wandb(config)
    warn_about_exports(config)
    return Findings(
        config=config,
        splits=splits,
        spec=spec,
        devices=devices,
        world_size=world_size,
        weights=weights,
        windows=windows,
    )


def check_shares(config: JobConfig, windows: dict[str, WindowPlan], world_size: int) -> None:
    """Every process needs a validation (and test) batch: with fewer items than processes, one would have none
    and Lightning stops all of them with a traceback once the run folder is written."""
    source = config.data_source
    unit = f"{source.item_name}(s)"
    for split, field_name in (("val", "val_file" if source.val_file else "percentage_val"), ("test", "test_file")):
        if split in windows and len(windows[split]) < world_size:
            raise ConfigError(
                f"data_source.{field_name}: the {split} split has {len(windows[split])} {unit} for "
                f"{world_size} processes, and every process needs at least one: list more, or use "
                "fewer processes"
            )


def check_stitching(config: JobConfig, splits: Splits, world_size: int) -> None:
    """Each process stitches whole test scenes: every process needs one (one waiting on none would hang the
    others at the end of the test)."""
    if config.stitches_scenes and len(splits.test) < world_size:
        raise ConfigError(
            f"output_setup.get_prediction: each of the {world_size} processes stitches whole test "
            f"scenes, but the test CSV lists {len(splits.test)}: list at least {world_size} rows (rows "
            "may name parts of a scene with col_off,row_off,width,height), or use fewer processes"
        )


def check_stitching_memory(config: JobConfig, splits: Splits, windows: dict[str, WindowPlan], spec: DataSpec) -> None:
    """A test scene is stitched in a band of patch_size rows across its width: refused before it is allocated when
    that band is larger than :data:`MAX_STITCH_BYTES`, naming the row and how to split it."""
    grid = windows.get("test")
    if not config.output_setup.get_prediction or not isinstance(grid, GridWindows):
        return
    row, needed = widest_band(grid, spec.n_classes)
    widths = grid.regions[:, 3]
    if needed > MAX_STITCH_BYTES:
        raise ConfigError(
            f"output_setup.get_prediction: {splits.test[row].origin}: stitching its prediction holds "
            f"{grid.patch} rows of {int(widths[row])} pixels for {spec.n_classes} classes, "
            f"{needed / 2**30:.1f} GiB (at most {MAX_STITCH_BYTES / 2**30:.0f}): split the scene into "
            "narrower rows (image,mask,col_off,row_off,width,height)"
        )


#: The most training windows an epoch may draw: its order is a permutation held in memory (8 bytes a window).
MAX_WINDOWS_PER_EPOCH = 100_000_000


def check_epoch_size(config: JobConfig, windows: dict[str, WindowPlan]) -> None:
    """``train_windows: "area"`` on huge scenes with a small patch would make an epoch of billions of windows
    (and a permutation of as many): refused, with the way to choose the epoch's size."""
    count = len(windows["train"]) if "train" in windows else 0
    if count > MAX_WINDOWS_PER_EPOCH:
        raise ConfigError(
            f"data_source.train_windows: {config.data_source.train_windows!r} gives {count:,} windows "
            f"an epoch (the scenes' area ÷ patch_size²), more than {MAX_WINDOWS_PER_EPOCH:,}: give a "
            "number of windows per epoch, or a larger patch_size"
        )


def check_precision(config: JobConfig, accelerator: str) -> None:
    if config.train_setup.precision == "16-mixed" and accelerator == "cpu":
        raise ConfigError('train_setup.precision: "16-mixed" needs a GPU; on the CPU use "bf16-mixed" or "32"')


def batches_per_epoch(config: JobConfig, n_train_samples: int, world_size: int) -> int:
    """Training batches each process runs per epoch, as the data module makes them (``n_train_samples``: tiles,
    or windows of scenes, per epoch)."""

    batches = training_batches(n_train_samples, config.train_setup.batch_size, world_size)
    return min(batches, TESTING_BATCHES) if config.train_setup.testing else batches


def check_val_check_interval(config: JobConfig, n_train_samples: int, world_size: int) -> None:
    """A number of batches larger than an epoch would make Lightning fail after start-up."""
    interval = config.train_setup.val_check_interval
    batches = batches_per_epoch(config, n_train_samples, world_size)
    if isinstance(interval, int) and interval > batches:
        raise ConfigError(
            f"train_setup.val_check_interval: {interval} batches, but an epoch has only {batches} "
            f"({n_train_samples} training samples, batch_size {config.train_setup.batch_size}, "
            f"{world_size} process(es)); use a fraction of the epoch (a float) or a smaller number"
        )


def check_optimization(config: JobConfig) -> None:
    """The optimizer and scheduler take their arguments: built once on a dummy parameter."""

    setup = config.train_setup
    lr = setup.learning_rate
    if lr != setup.lr and "lr" in setup.model_fields_set:
        log.info(
            "learning rate: optimizer_config.lr %g wins over train_setup.lr %g (ODEON's code ignored "
            "optimizer_config.lr and trained at train_setup.lr)",
            lr,
            setup.lr,
        )
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], setup.optimizer_config, lr)
    build_scheduler(optimizer, setup.scheduler_config, lr, setup.epochs)


def read_weights_files(config: JobConfig) -> dict[str, dict[str, Any]]:
    """``init_weights`` and ``encoder_weights``, each read once and loaded as plain tensors (their fit to the
    model is checked when the model is built)."""

    setup = config.train_setup
    encoder = encoder_weights_file(setup.model_name, setup.encoder_weights)
    files = (("init_weights", setup.init_weights), ("encoder_weights", encoder))
    return {key: read_state_dict(url, f"train_setup.{key}") for key, url in files if url}


def fit_model_to_weights(config: JobConfig, weights: dict[str, dict[str, Any]]) -> JobConfig:
    """``config`` with the model parameters ODEON ``init_weights`` need (ours leave it as it is)."""

    if "init_weights" not in weights:
        return config
    setup = fit_to_weights(config.train_setup, weights["init_weights"])
    return config if setup is config.train_setup else config.model_copy(update={"train_setup": setup})


def warn_about_exports(config: JobConfig) -> None:
    """Exports ODEON would not take as the user may expect (once fitted to ODEON weights: their align_corners)."""

    setup = config.train_setup
    exports = setup.export_checkpoint or []
    if ".pth" in exports and setup.model_name in ODEON_U_NETS and "odeon_pth" not in exports:
        log.warning(
            "export_checkpoint: the .pth exports hold this job's layer names, which ODEON's "
            'load_state_dict(strict=True) refuses (our init_weights reads both); add "odeon_pth" to '
            "export_checkpoint for .odeon.pth files that ODEON loads"
        )
    params = setup.model_params
    if "odeon_pth" in exports and params.upsampling == "bilinear" and not params.align_corners:
        log.warning(
            "export_checkpoint: ODEON's U-Nets interpolate with align_corners=True and this model with "
            "false: in ODEON the .odeon.pth exports predict otherwise (about 8 % of pixels differ); train "
            "with model_params.align_corners: true for ODEON to predict what this job does"
        )


def check_wandb(config: JobConfig) -> None:
    if config.output_setup.use_wandb and importlib.util.find_spec("wandb") is None:
        raise ConfigError(
            "output_setup.use_wandb: the wandb package is not installed (pip install wandb), or set use_wandb to false"
        )
