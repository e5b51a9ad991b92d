"""The model card: one Markdown page in the run folder (and the MLflow run, and the registered model's
description) that says what a model was trained on, how, how well it did per class, and how to use it, for the
colleague who finds the model without its author."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytorch_lightning as pl

import odeon_job
from odeon_job import storage
from odeon_job.config import JobConfig
from odeon_job.data.spec import split_resolutions
from odeon_job.outputs.callbacks.history import History
from odeon_job.outputs.run_folder import RunFolder
from odeon_job.redaction import redact
from odeon_job.training.segmentation_module import SegmentationModule, segmentation_module

log = logging.getLogger("odeon")

#: The figures of each class the card's test table shows, from the history entry.
CLASS_FIGURES = ("IoU", "F1-Score", "Precision", "Recall")


def _figure(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _resolution(config: JobConfig) -> str:
    sizes = {split: size for split, size in split_resolutions(config.data_source).items() if size}
    if not sizes:
        return "the files' own pixel size"
    shown = {f"{x:g} m" if x == y else f"{x:g} × {y:g} m" for x, y in sizes.values()}
    return ", ".join(sorted(shown)) if len(shown) == 1 else ", ".join(f"{s}: {x:g} m" for s, (x, _) in sizes.items())


def model_card(
    config: JobConfig,
    folder: RunFolder,
    module: SegmentationModule,
    history: History,
    samples: dict[str, int],
    best_checkpoint: str | None,
    epochs_run: int,
    stopped_early: bool,
) -> str:
    """The card's Markdown. Epochs are counted from 1 here, as on the console; the history's keys and the
    checkpoints' ``epoch=`` count from 0 (Lightning's and the files' convention), and the card names both."""
    source, setup, out = config.data_source, config.train_setup, config.output_setup
    labels, colours = module.class_labels, module.class_colors
    parameters = sum(p.numel() for p in module.model.parameters())
    lines = [
        f"# Model card: {setup.model_name}, {out.name_exp_log}/{out.version_name}",
        "",
        f"Trained by odeon-job {odeon_job.__version__} (finished {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}): "
        f"semantic segmentation of {module.in_channels}-band images at {_resolution(config)} into "
        f"{len(labels)} classes. Run folder: `{redact(folder.url)}`.",
        "",
        "## Data",
        "",
        "| Split | CSV | Items (tiles, or windows of scenes) |",
        "|---|---|---|",
    ]
    files = {"train": source.train_file, "val": source.val_file, "test": source.test_file}
    for split, count in samples.items():
        csv = files.get(split) or (f"{source.train_file} (held out: percentage_val)" if split == "val" else "-")
        lines.append(f"| {split} | `{redact(csv)}` | {count} |")
    bands = ", ".join(map(str, source.image_bands)) if source.image_bands else f"all {module.in_channels}"
    scale = f"divided by {source.image_max_value:g}" if source.image_max_value else "uint8 divided by 255"
    normalised = "normalised by data_source.normalization_weights" if source.normalization_weights else "not normalised"
    lines += [
        "",
        f"Bands {bands} (1-based, as GDAL), {scale}, {normalised}; windows of {source.patch_size} pixels"
        if source.patch_size
        else f"Bands {bands} (1-based, as GDAL), {scale}, {normalised}; tiles read whole.",
        "",
        "| Class | Label | Colour |",
        "|---|---|---|",
        *(
            f"| {index} | {label} | `{colour}` |"
            for index, (label, colour) in enumerate(zip(labels, colours, strict=True))
        ),
        "",
        "## Training",
        "",
        f"- Model `{setup.model_name}` ({parameters / 1e6:.1f} M parameters), loss `{setup.loss}`, optimizer "
        f"`{setup.optimizer_config.optimizer if setup.optimizer_config else 'adam'}`, learning rate {setup.lr:g}, "
        f"batch size {setup.batch_size} per process, encoder weights {setup.encoder_weights or 'none'}.",
        f"- {epochs_run} of {setup.epochs} epochs run"
        + (" (stopped early: train_setup.early_stopping)." if stopped_early else "."),
    ]
    best = history.best_key()
    if best is not None:
        entry = history.entries[best]
        epoch = int(float(best)) + 1
        checkpoint = f", checkpoint `{storage.basename(best_checkpoint)}`" if best_checkpoint else ""
        lines.append(
            f'- Best epoch (lowest validation loss): {epoch} (history key "{best}"{checkpoint}): validation loss '
            f"{_figure(entry.get('loss'))}, mIoU {_figure(entry.get('Average/IoU'))}."
        )
    lines += ["- The whole configuration: `config.json` in the run folder.", "", "## Test figures", ""]
    if history.test_entry:
        tested = next(iter(history.test_entry.values()))
        lines += [
            f"The best checkpoint on the {samples.get('test', 0)} test samples (fractions in [0, 1]):",
            "",
            f"| Class | {' | '.join(CLASS_FIGURES)} |",
            f"|---|{'---|' * len(CLASS_FIGURES)}",
            *(
                f"| {label} | {' | '.join(_figure(tested.get(f'{label}/{name}')) for name in CLASS_FIGURES)} |"
                for label in (*labels, "Average")
            ),
            "",
            f"Overall accuracy {_figure(tested.get('Overall/Accuracy'))}, test loss {_figure(tested.get('loss'))}.",
        ]
    else:
        lines.append("No test split (data_source.test_file): the validation figures above are the model's only ones.")
    lines += [
        "",
        "## How to use it",
        "",
        "```console",
        f"odeon predict --model {redact(folder.url)} --images IMAGES --output MAPS",
        f"odeon evaluate --model {redact(folder.url)} --data LABELLED.csv --output REPORT",
        "```",
        "",
        "`--images` takes a folder, a CSV, a glob or an `s3://` prefix of GeoTIFFs with the bands above; each map is "
        "a GeoTIFF of class indices in the colours above (with a QGIS style).",
    ]
    if out.registered_model_name:
        lines.append(f"In MLflow's registry: `--model models:/{out.registered_model_name}/VERSION`.")
    return "\n".join(lines) + "\n"


class ModelCardWriter(pl.Callback):
    """Writes ``model_card.md`` at the end of the training, and again once the test has its figures."""

    def __init__(self, config: JobConfig, folder: RunFolder, history: History) -> None:
        self.config, self.folder, self.history = config, folder, history
        self.epochs_run = 0

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        datamodule: Any = getattr(trainer, "datamodule", None)
        datasets = getattr(datamodule, "datasets", {}) or {}
        samples = {split: len(dataset) for split, dataset in datasets.items() if dataset is not None}
        checkpoint = next(
            (
                getattr(c, "best_model_path", None)
                for c in trainer.checkpoint_callbacks
                if getattr(c, "monitor", None) == "val_loss"
            ),
            None,
        )
        stopped_early = any(getattr(c, "stopped_epoch", 0) for c in trainer.early_stopping_callbacks)
        card = model_card(
            self.config,
            self.folder,
            segmentation_module(pl_module),
            self.history,
            samples,
            checkpoint or None,
            self.epochs_run,
            stopped_early,
        )
        storage.write_text(self.folder.model_card, card)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs_run = trainer.current_epoch  # (epochs completed: Lightning counts on after the last)
        self._write(trainer, pl_module)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module)
