"""``train(config)``: the one place that wires the pieces of a run together.

Everything a user can get wrong (features not available yet, CSVs, bands, the first sample of each
split, the optimizer's arguments, the devices) is checked before the run folder is created, so a
mistake never leaves an empty or partial run behind.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from odeon_job import storage
from odeon_job.config import JobConfig, resolve_run_names
from odeon_job.errors import ConfigError

if TYPE_CHECKING:
    from pytorch_lightning import Callback
    from pytorch_lightning.callbacks import ModelCheckpoint

log = logging.getLogger("odeon")

#: Batches per epoch and split when ``train_setup.testing`` is true.
TESTING_BATCHES = 4
CONFIG_FILE = "config.json"
HISTORY_FILE = "history_val.json"
VAL_LOSS_CKPT_FOLDER = "odeon_val_loss_ckpt"
VAL_MIOU_CKPT_FOLDER = "odeon_val_miou_ckpt"
TENSORBOARD_FOLDER = "tensorboard"


@dataclass
class TrainResult:
    run_folder: str
    best_checkpoint: str
    history: dict[str, dict[str, float]]
    test: dict[str, float] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, float]:
        """The last validation entry."""
        return next(reversed(self.history.values()))


def check_supported(config: JobConfig) -> None:
    """Refuse, with the key to change, what the specification names but this version cannot do yet."""
    out, setup = config.output_setup, config.train_setup
    extension = out.model_out_ext or (os.path.splitext(out.model_filename or "")[1] or ".ckpt")
    unsupported = {
        "output_setup.use_wandb": out.use_wandb,
        "output_setup.get_prediction": out.get_prediction,
        "output_setup.model_out_ext (.pth model files)": extension == ".pth",
        "train_setup.export_checkpoint": bool(setup.export_checkpoint),
        "train_setup.continue_training": setup.continue_training,
    }
    for key, asked in unsupported.items():
        if asked:
            raise ConfigError(f"{key}: not supported yet by this version; leave it at its default")


def run_folder(config: JobConfig) -> str:
    """``output_folder/name_exp_log/version_name`` of a config whose names are resolved."""
    out = config.output_setup
    assert out.name_exp_log and out.version_name, "resolve_run_names first"
    return storage.join(out.output_folder, out.name_exp_log, out.version_name)


def _model_basename(config: JobConfig) -> str:
    name = config.output_setup.model_filename
    return os.path.splitext(os.path.basename(name))[0] if name else config.train_setup.model_name


def trainer_options(config: JobConfig, n_train_samples: int) -> dict[str, Any]:
    """The Trainer arguments that follow from ``train_setup`` and ``output_setup`` (devices aside)."""
    setup, out = config.train_setup, config.output_setup
    limit = TESTING_BATCHES if setup.testing else None
    return {
        "max_epochs": setup.epochs,
        "deterministic": "warn" if setup.deterministic else False,
        "enable_progress_bar": out.progress > 0,
        "val_check_interval": setup.val_check_interval,
        "limit_train_batches": limit,
        "limit_val_batches": limit,
        "limit_test_batches": limit,
        "log_every_n_steps": max(1, min(50, math.ceil(n_train_samples / setup.batch_size))),
    }


def check_val_check_interval(config: JobConfig, n_train_samples: int, world_size: int) -> None:
    """A number of batches larger than an epoch would make Lightning fail after start-up."""
    setup = config.train_setup
    batches = math.ceil(n_train_samples / (setup.batch_size * world_size))
    if setup.testing:
        batches = min(batches, TESTING_BATCHES)
    if isinstance(setup.val_check_interval, int) and setup.val_check_interval > batches:
        raise ConfigError(f"train_setup.val_check_interval: {setup.val_check_interval} batches, but an epoch has "
                          f"only {batches}; use a fraction of the epoch (a float) or a smaller number")


def checkpoint_callbacks(config: JobConfig, folder: str) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """Top-k lowest ``val_loss`` (plus ``last.ckpt``) and top-k highest ``val_miou`` checkpoints."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    base, top_k = _model_basename(config), config.output_setup.save_top_k
    best_loss = ModelCheckpoint(dirpath=storage.join(folder, VAL_LOSS_CKPT_FOLDER),
                                filename=f"{base}-{{epoch}}-{{val_loss:.4f}}", monitor="val_loss", mode="min",
                                save_top_k=top_k, save_last=True)
    best_miou = ModelCheckpoint(dirpath=storage.join(folder, VAL_MIOU_CKPT_FOLDER),
                                filename=f"{base}-{{epoch}}-{{val_miou:.4f}}", monitor="val_miou", mode="max",
                                save_top_k=top_k)
    return best_loss, best_miou


def optional_callbacks(config: JobConfig) -> list[Callback]:
    """Progress bars and early stopping, when the configuration asks for them."""
    from pytorch_lightning.callbacks import EarlyStopping, TQDMProgressBar

    callbacks: list[Callback] = []
    if config.output_setup.progress > 0:
        callbacks.append(TQDMProgressBar(refresh_rate=config.output_setup.progress))
    stop = config.train_setup.early_stopping
    if stop is not None:
        callbacks.append(EarlyStopping(monitor=stop.monitor, mode="min" if stop.monitor == "val_loss" else "max",
                                       patience=stop.patience, min_delta=stop.min_delta))
    return callbacks


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def _quiet_lightning() -> None:
    """Drop Lightning's advertisement and a deprecation warning it triggers in torch: nothing to act on."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    for handler in logging.getLogger("pytorch_lightning").handlers:
        if not any(isinstance(f, _NoTips) for f in handler.filters):
            handler.addFilter(_NoTips())

def train(config: JobConfig) -> TrainResult:
    """Train as ``config`` says; returns where the run went and its figures."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.loggers import TensorBoardLogger

    from odeon_job.callbacks.history import ValidationHistory
    from odeon_job.callbacks.report import ValidationReport
    from odeon_job.data.datamodule import SegmentationDataModule
    from odeon_job.data.samples import load_splits
    from odeon_job.data.spec import describe_data
    from odeon_job.launch import trainer_devices
    from odeon_job.models.weights import load_encoder_weights, load_init_weights
    from odeon_job.module import SegmentationModule

    _quiet_lightning()
    check_supported(config)
    config = resolve_run_names(config)
    setup, out, device_setup = config.train_setup, config.output_setup, config.device_setup
    folder = run_folder(config)
    if storage.is_nonempty_folder(folder):
        raise ConfigError(f"output_setup.version_name: the run folder {folder} already exists and is not empty; "
                          "choose another version_name (or name_exp_log)")

    splits = load_splits(config.data_source, setup.random_seed)
    spec = describe_data(config.data_source, splits.train[0])
    alpha = setup.loss_params.alpha
    for key, weights in (("class_imbalance", setup.class_imbalance),
                         ("loss_params.alpha", alpha if isinstance(alpha, list) else None)):
        if weights is not None and len(weights) != spec.n_classes:
            raise ConfigError(f"train_setup.{key}: {len(weights)} weights but the masks have {spec.n_classes} "
                              "classes")
    devices = trainer_devices(device_setup)
    log.info("data: %d train, %d val, %d test samples; %d bands, %d classes (%s)", len(splits.train),
             len(splits.val), len(splits.test), spec.in_channels, spec.n_classes, ", ".join(spec.class_labels))

    pl.seed_everything(setup.random_seed, workers=True, verbose=False)
    datamodule = SegmentationDataModule(splits, spec, config.data_source, setup.batch_size,
                                        device_setup.num_workers, pin_memory=devices["accelerator"] == "gpu")
    datamodule.check_first_samples()
    module = SegmentationModule(config.model_dump(mode="json"), spec.to_dict())
    if setup.encoder_weights:
        load_encoder_weights(module.model, setup.encoder_weights)
    if setup.init_weights:
        load_init_weights(module.model, setup.init_weights)
    module.configure_optimizers()  # a bad optimizer or scheduler argument fails now, not after start-up

    history = ValidationHistory(storage.join(folder, HISTORY_FILE) if out.save_history else None)
    best_loss, best_miou = checkpoint_callbacks(config, folder)
    callbacks: list[pl.Callback] = [history, ValidationReport(), best_loss, best_miou, *optional_callbacks(config)]
    logger = (TensorBoardLogger(save_dir=folder, name=TENSORBOARD_FOLDER, version="", default_hp_metric=False)
              if out.use_tensorboard else False)
    if logger and out.log_learning_rate:
        callbacks.append(LearningRateMonitor(logging_interval="epoch", log_momentum=True))
    if setup.deterministic:
        log.info("deterministic: PyTorch's deterministic algorithms are used where they exist; an operation "
                 "without one runs as usual and PyTorch warns about it once")
    try:
        trainer = pl.Trainer(**trainer_options(config, len(splits.train)), **devices, callbacks=callbacks,
                             logger=logger, default_root_dir=folder)
    except (ValueError, TypeError, RuntimeError) as error:  # Lightning's MisconfigurationException is a ValueError
        raise ConfigError(f"device_setup: {error}") from error
    check_val_check_interval(config, len(splits.train), trainer.world_size)

    storage.makedirs(folder)
    storage.write_text(storage.join(folder, CONFIG_FILE), config.model_dump_json(indent=2) + "\n")
    log.info("run folder: %s", folder)
    trainer.fit(module, datamodule=datamodule)

    result = TrainResult(run_folder=folder, best_checkpoint=best_loss.best_model_path, history=history.entries)
    if datamodule.has_test and result.best_checkpoint:
        metrics = trainer.test(module, datamodule=datamodule, ckpt_path=result.best_checkpoint, verbose=False)
        result.test = {key: float(value) for key, value in metrics[0].items()}
    return result
