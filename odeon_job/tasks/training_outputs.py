"""The callbacks and loggers a training gets from its configuration (``output_setup``, ``train_setup``): what the
run leaves behind, chosen in one place; and which file holds the best model once the training is over."""

from __future__ import annotations

import os
from typing import Any

from pytorch_lightning import Callback
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.loggers import Logger, WandbLogger

from odeon_job import storage
from odeon_job.config import JobConfig
from odeon_job.data.datamodule import SegmentationDataModule
from odeon_job.outputs.callbacks.checkpoints import (
    BestPthFiles,
    ExportingCheckpoint,
    LastCheckpoint,
)
from odeon_job.outputs.callbacks.early_stopping import ReportingEarlyStopping
from odeon_job.outputs.callbacks.epoch_order import EpochOrder
from odeon_job.outputs.callbacks.figures import FigurePublisher
from odeon_job.outputs.callbacks.history import History
from odeon_job.outputs.callbacks.model_card import ModelCardWriter
from odeon_job.outputs.callbacks.predictions import ErrorReport, PredictionWriter
from odeon_job.outputs.callbacks.progress_lines import ProgressLines, draws_bars
from odeon_job.outputs.callbacks.report import ValidationReport
from odeon_job.outputs.callbacks.row_scores import RowScores
from odeon_job.outputs.callbacks.stitching import SceneStitcher
from odeon_job.outputs.loggers.figure_folder import FigureFolder
from odeon_job.outputs.loggers.mlflow import MlflowOutput
from odeon_job.outputs.loggers.tensorboard import TensorBoardOutput
from odeon_job.outputs.run_folder import (
    LAST_CHECKPOINT,
    RunFolder,
    model_basename,
    model_file_extension,
    prediction_names,
)
from odeon_job.process.launch import is_first_process
from odeon_job.process.shutdown import GracefulStop


def checkpoint_callbacks(config: JobConfig, folder: RunFolder) -> list[ExportingCheckpoint]:
    """``.ckpt`` mode: the top-k lowest ``val_loss`` and top-k highest ``val_miou`` checkpoints.
    ``.pth`` mode: none of those. Both: ``last.ckpt``, rewritten at every validation, for resuming.
    ``export_checkpoint`` adds .pth exports.

    ``last.ckpt`` has a callback of its own: Lightning (2.6) rewrites a ModelCheckpoint's
    ``save_last`` file only when that callback saved a top-k file at the same step, so a resumed run
    would restart from the last improvement rather than the last validation.
    """

    base, top_k = model_basename(config), config.output_setup.save_top_k
    exports = config.train_setup.export_checkpoint or []
    loss_folder = folder.val_loss_checkpoints
    last = LastCheckpoint(
        dirpath=loss_folder,
        filename=os.path.splitext(LAST_CHECKPOINT)[0],
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
        exports=exports,
    )
    if model_file_extension(config) == ".pth":
        return [last]
    return [
        ExportingCheckpoint(
            dirpath=loss_folder,
            filename=f"{base}-{{epoch}}-{{val_loss:.4f}}",
            monitor="val_loss",
            mode="min",
            save_top_k=top_k,
            exports=exports,
        ),
        ExportingCheckpoint(
            dirpath=folder.val_miou_checkpoints,
            filename=f"{base}-{{epoch}}-{{val_miou:.4f}}",
            monitor="val_miou",
            mode="max",
            save_top_k=top_k,
            exports=exports,
        ),
        last,
    ]


def optional_callbacks(config: JobConfig) -> list[Callback]:
    """Progress (bars on a terminal, lines elsewhere) and early stopping, when the configuration asks for them."""

    callbacks: list[Callback] = []
    out = config.output_setup
    if out.progress > 0:
        callbacks.append(
            TQDMProgressBar(refresh_rate=out.progress) if draws_bars() else ProgressLines(out.progress_every)
        )
    stop = config.train_setup.early_stopping
    if stop is not None:
        callbacks.append(ReportingEarlyStopping(**stop.arguments))
    return callbacks


def wandb_logger(config: JobConfig, folder: RunFolder) -> Any:
    """A Weights & Biases logger, offline unless an API key is set (``WANDB_API_KEY``)."""

    out = config.output_setup
    offline = not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") != "online"
    save_dir = folder.url if storage.is_local(folder.url) else storage.staging_folder("wandb")  # wandb: local files
    return WandbLogger(project=out.name_exp_log, name=out.version_name, save_dir=save_dir, offline=offline)


def output_callbacks(config: JobConfig, folder: RunFolder, datamodule: SegmentationDataModule) -> list[Callback]:
    """History, console report, model files, early stopping, progress bars, predictions."""

    out, has_test = config.output_setup, datamodule.has_test
    history = History(
        folder.history_val if out.save_history else None, folder.history_test if out.save_history and has_test else None
    )
    callbacks: list[Callback] = [
        EpochOrder(),
        history,
        FigurePublisher(history),
        ValidationReport(),
        ModelCardWriter(config, folder, history),
        *checkpoint_callbacks(config, folder),
        *optional_callbacks(config),
    ]
    if model_file_extension(config) == ".pth":
        callbacks.append(BestPthFiles(folder, model_basename(config)))
    return [*callbacks, *prediction_callbacks(config, folder, datamodule)]


def test_callbacks(
    config: JobConfig, folder: RunFolder, datamodule: SegmentationDataModule, history: History
) -> list[Callback]:
    """What a test alone leaves (``odeon evaluate``), as the training's test phase: ``history`` (the test entry), the
    pictures, the predictions."""
    return [history, FigurePublisher(history), *prediction_callbacks(config, folder, datamodule)]


def prediction_callbacks(config: JobConfig, folder: RunFolder, datamodule: SegmentationDataModule) -> list[Callback]:
    """The test's predictions (stitched scenes, or one file per tile) and its report (an error map per row,
    ``scenes.csv``), when the configuration asks for predictions."""
    out = config.output_setup
    if not out.get_prediction or not datamodule.has_test:
        return []
    dataset = datamodule.datasets["test"]
    names = prediction_names([sample.image for sample in dataset.samples])
    scores = RowScores(folder.scenes_table, dataset.samples, names, dataset.spec.class_labels)
    report = ErrorReport(folder.errors, scores)
    writer: Callback
    if config.stitches_scenes:
        writer = SceneStitcher(folder.predictions, out.prediction_output_type, dataset, names, report=report)
    else:
        writer = PredictionWriter(folder.predictions, out.prediction_output_type, dataset, report)
    return [writer, scores]


def output_loggers(
    config: JobConfig, folder: RunFolder, resuming: bool, test_follows: bool, stop: GracefulStop
) -> list[Logger]:
    """The run folder's ``figures/``, then TensorBoard, MLflow (first process) and Weights & Biases, as the
    configuration asks: Lightning drives them, from the start of the training to the end of the test."""
    out = config.output_setup
    loggers: list[Logger] = [FigureFolder(folder.figures)]
    if out.use_tensorboard:
        loggers.append(TensorBoardOutput(folder.tensorboard, out.log_learning_rate))
    if out.use_mlflow and is_first_process():
        pth_model = folder.pth_file(model_basename(config)) if model_file_extension(config) == ".pth" else None
        loggers.append(
            MlflowOutput(
                config, folder, resuming, test_follows, killed=lambda: stop.received_at is not None, pth_model=pth_model
            )
        )
    if out.use_wandb:
        loggers.append(wandb_logger(config, folder))
    return loggers


def best_model(callbacks: list[Callback]) -> str:
    """The best val_loss model: ``{name}.pth`` in .pth mode, else the best val_loss checkpoint ("" before any)."""

    for callback in callbacks:
        if isinstance(callback, BestPthFiles):
            return callback.model_path
    return next(c.best_model_path for c in callbacks if isinstance(c, ExportingCheckpoint) and c.monitor == "val_loss")
