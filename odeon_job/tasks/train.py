"""``train(config)``: the one place that wires the pieces of a run together.

Everything a user can get wrong (CSVs, bands, the first sample of each split, weights files, the
optimizer's arguments, the devices, what there is to resume) is checked before anything is written,
so a mistake never leaves an empty or partial run behind.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl

from odeon_job.config import JobConfig
from odeon_job.data.datamodule import SegmentationDataModule
from odeon_job.data.dataset import SegmentationDataset
from odeon_job.data.masks import count_ignored
from odeon_job.data.raster import clear_remote_cache, gdal_options
from odeon_job.data.spec import DataSpec
from odeon_job.data.windows import describe_plans
from odeon_job.errors import ConfigError, DataError
from odeon_job.outputs.callbacks.checkpoints import (
    StorageCheckpointIO,
)
from odeon_job.outputs.callbacks.history import History
from odeon_job.outputs.callbacks.progress_lines import draws_bars
from odeon_job.outputs.callbacks.stop_handling import StopHandling
from odeon_job.outputs.run_folder import RunFolder
from odeon_job.process.launch import handing_over, prepare_launch, with_run_names
from odeon_job.process.shutdown import GracefulStop, Terminated, is_sigterm_stop
from odeon_job.redaction import redact, redact_log_handlers, redact_values
from odeon_job.storage.retries import transient_retries
from odeon_job.storage.s3_settings import s3_endpoint
from odeon_job.tasks.preflight import TESTING_BATCHES, Findings, check_before_training, check_shares
from odeon_job.tasks.training_outputs import best_model, output_callbacks, output_loggers
from odeon_job.training.models.weights import load_encoder_weights, load_init_weights, read_state_dict
from odeon_job.training.segmentation_module import NonFiniteLoss, SegmentationModule

log = logging.getLogger("odeon")


@dataclass
class TrainResult:
    run_folder: str
    best_checkpoint: str
    history: dict[str, dict[str, Any]]
    test: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, Any]:
        """The last validation entry."""
        return next(reversed(self.history.values()))

    @property
    def test_entry(self) -> dict[str, Any] | None:
        return next(iter(self.test.values()), None)


def trainer_options(config: JobConfig, n_train_samples: int) -> dict[str, Any]:
    """The Trainer arguments that follow from ``train_setup`` and ``output_setup`` (devices aside)."""

    setup, out = config.train_setup, config.output_setup
    limit = TESTING_BATCHES if setup.testing else None
    return {
        "max_epochs": setup.epochs,
        "deterministic": "warn" if setup.deterministic else False,
        "enable_progress_bar": out.progress > 0 and draws_bars(),
        "val_check_interval": setup.val_check_interval,
        "limit_train_batches": limit,
        "limit_val_batches": limit,
        "limit_test_batches": limit,
        "log_every_n_steps": max(1, min(50, math.ceil(n_train_samples / setup.batch_size))),
        "precision": setup.precision,
        "use_distributed_sampler": False,  # our samplers shard the data themselves
    }


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def quiet_lightning() -> None:
    """Drop Lightning's advertisement and a deprecation warning it triggers in torch: nothing to act on."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # The module's on_after_batch_transfer (masks to int64) is meant to win over the datamodule's.
    warnings.filterwarnings("ignore", message=r"You have overridden `on_after_batch_transfer`")
    for handler in logging.getLogger("pytorch_lightning").handlers:
        if not any(isinstance(f, _NoTips) for f in handler.filters):
            handler.addFilter(_NoTips())


def log_settings(config: JobConfig, findings: Findings) -> None:
    """What ``-v`` shows before training: the resolved settings, the data per split, storage settings."""
    if not log.isEnabledFor(logging.DEBUG):
        return

    log.debug("settings: %s", json.dumps(redact_values(config.model_dump(mode="json")), sort_keys=True))
    for split, samples in findings.splits.items():
        first = f", first {samples[0].origin}: {samples[0].image}" if samples else ""
        log.debug("data: %s: %d sample(s)%s", split, len(samples), first)
    log.debug("data: %s", findings.spec)
    log.debug("devices: %s, %d process(es) in all", findings.devices, findings.world_size)
    endpoint = s3_endpoint()
    log.debug(
        "storage: S3 endpoint %s; GDAL options %s",
        redact(endpoint) if endpoint else "(AWS default)",
        gdal_options(whole_files=True),
    )


def report_ignored_pixels(spec: DataSpec, firsts: dict[str, dict[str, Any]]) -> None:
    """Say which pixels the loss and metrics leave out, and how many of each split's first tile."""

    shares = {
        split: count_ignored(item["mask"].numpy(), spec.n_classes) / max(1, item["mask"].numel())
        for split, item in firsts.items()
    }
    if any(shares.values()):
        log.info(
            "ignored pixels (left out of the loss and every metric): %s; %s",
            spec.ignored_pixels_rule(),
            ", ".join(f"{share:.1%} of the first {split} tile" for split, share in shares.items()),
        )


def build_module(config: JobConfig, findings: Findings, resume_from: str | None) -> SegmentationModule:
    """The LightningModule, with the user's initial weights (unless resuming)."""

    setup = config.train_setup
    # Hyperparameters are saved in every checkpoint: URLs without their credentials.
    module = SegmentationModule.from_config(redact_values(config.model_dump(mode="json")), findings.spec)
    if setup.encoder_weights and not resume_from:
        load_encoder_weights(module.model, setup.encoder_weights, findings.weights["encoder_weights"])
    if setup.init_weights and not resume_from:
        load_init_weights(module.model, setup.init_weights, findings.weights["init_weights"])
    return module


def evaluate_best_model(
    trainer: pl.Trainer, module: SegmentationModule, datamodule: SegmentationDataModule, model_file: str
) -> None:
    """Evaluate the best val_loss model on the test split (figures, history, predictions)."""

    if model_file.endswith(".pth"):  # .pth mode: the best weights are in {name}.pth
        module.model.load_state_dict(read_state_dict(model_file, "the best model"))
        trainer.test(module, datamodule=datamodule, verbose=False)
    else:
        trainer.test(module, datamodule=datamodule, ckpt_path=model_file, verbose=False)


def train(config: JobConfig, stop: GracefulStop | None = None) -> TrainResult:
    """Train as ``config`` says; returns where the run went and its figures. ``stop``: SIGTERM's
    handler when the caller installed it earlier (the command line does, before the heavy imports)."""
    with handing_over():  # (the run's names, handed to its DDP processes, go with it)
        return _train(config, stop)


def _train(config: JobConfig, stop: GracefulStop | None) -> TrainResult:

    own_stop = stop is None  # installed here, so restored here: train() may run inside a longer process
    stop = stop or GracefulStop(config.device_setup.stop_grace_period).install()
    stop.grace_period = config.device_setup.stop_grace_period

    retries_before = transient_retries()
    quiet_lightning()
    redact_log_handlers()  # Lightning's handlers, installed by its import
    clear_remote_cache()  # GDAL would serve the old bytes of objects rewritten since this process read them
    config = with_run_names(config)
    setup, device_setup = config.train_setup, config.device_setup
    folder = RunFolder.of(config)
    start = folder.decide_start(config)
    resume_from = start.resume_from

    started = time.monotonic()
    findings = check_before_training(config, shares=False)  # what `odeon validate` checks too
    config = findings.config  # model parameters fitted to ODEON weights
    setup = config.train_setup
    splits, spec, devices = findings.splits, findings.spec, findings.devices
    prepare_launch(devices)
    check_shares(config, findings.windows, findings.world_size)
    log_settings(config, findings)
    log.info(
        "data: %d train, %d val, %d test samples; %d bands, %d classes (%s)",
        len(splits.train),
        len(splits.val),
        len(splits.test),
        spec.in_channels,
        spec.n_classes,
        ", ".join(spec.class_labels),
    )
    if config.data_source.reads_scenes:
        log.info("data: %s", describe_plans(findings.windows, config.data_source))

    pl.seed_everything(setup.random_seed, workers=True, verbose=False)
    pin_memory = devices["accelerator"] == "gpu" if device_setup.pin_memory is None else device_setup.pin_memory
    datamodule = SegmentationDataModule(
        splits,
        spec,
        config.data_source,
        setup.batch_size,
        device_setup.num_workers,
        pin_memory=pin_memory,
        seed=setup.random_seed,
        persistent_workers=device_setup.persistent_workers,
        prefetch_factor=device_setup.prefetch_factor,
        windows=findings.windows,
        test_by_scene=config.stitches_scenes,
    )
    report_ignored_pixels(spec, datamodule.check_first_samples())
    module = build_module(config, findings, resume_from)
    callbacks = [*output_callbacks(config, folder, datamodule), StopHandling(stop, folder.last_checkpoint)]
    loggers = output_loggers(config, folder, resume_from is not None, datamodule.has_test, stop)
    if setup.deterministic:
        log.info(
            "deterministic: PyTorch's deterministic algorithms are used where they exist; an operation "
            "without one runs as usual and PyTorch warns about it once"
        )
    try:
        trainer = pl.Trainer(
            **trainer_options(config, len(datamodule.datasets["train"])),
            **devices,
            callbacks=callbacks,
            logger=loggers,
            default_root_dir=folder.url,
            plugins=[StorageCheckpointIO()],
        )
    except (ValueError, TypeError, RuntimeError) as error:  # Lightning's MisconfigurationException is a ValueError
        raise ConfigError(f"device_setup: {error}") from error

    log.debug("timing: start-up checks and set-up took %.1f s", time.monotonic() - started)
    folder.start(config, start)
    history = next(c for c in callbacks if isinstance(c, History))
    try:
        started = time.monotonic()
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        log.debug("timing: training took %.1f s", time.monotonic() - started)
        result = TrainResult(run_folder=folder.url, best_checkpoint=best_model(callbacks), history=history.entries)
        if datamodule.has_test:
            started = time.monotonic()
            evaluate_best_model(trainer, module, datamodule, result.best_checkpoint)
            log.debug("timing: the test took %.1f s", time.monotonic() - started)
            result.test = history.test_entry
    except NonFiniteLoss as error:
        raise non_finite_loss_error(error, datamodule.datasets["train"], setup.learning_rate) from error
    except BaseException as error:
        if not is_sigterm_stop(error):
            raise
        raise Terminated(
            f"stopped by SIGTERM; {folder.last_checkpoint} holds the last validated epoch: run again "
            'with train_setup.continue_training true (or "auto") to resume'
        ) from None
    finally:
        report_retries(retries_before)
        if own_stop:
            stop.restore()
    return result


def non_finite_loss_error(error: NonFiniteLoss, dataset: SegmentationDataset, lr: float) -> DataError:
    """One line naming the epoch, step and the samples of the batch whose loss was NaN or infinite."""
    rows = [dataset.origin(index, error.epoch) for index in error.indices]
    shown = "; ".join(rows[:8]) + (f"; ... ({len(rows)} samples)" if len(rows) > 8 else "")
    where = "in a batch of" if error.here else "on another process; this process's batch:"
    return DataError(
        f"the training loss became NaN or infinite at epoch {error.epoch + 1}, step {error.step} "
        f"{where} {shown}; check those tiles (extreme values? data_source.image_max_value?) or lower "
        f"the learning rate ({lr:g}); the weights of the last validation are kept"
    )


def report_retries(before: int) -> None:
    """Say how many transient storage failures this run retried (each was survived, or the run stopped);
    ``before``: the process's count when the run started (a process may train more than once)."""

    retries = transient_retries() - before
    if retries:
        log.warning(
            "storage: %d transient failure(s) were retried during this run (S3 requests and GDAL reads)", retries
        )
