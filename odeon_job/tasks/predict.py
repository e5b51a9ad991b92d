"""``predict(config)``: a trained model applied to images without masks, each image stitched into one map.

Images are read in a grid of windows and stitched as the test phase stitches its scenes (the same callback), under
the same launch as training (processes, GPUs, pods): each process takes every n-th image. A map that exists is whole
(written in one piece, after its sidecar files), so a rerun (a restarted pod, a run killed half-way) skips the images
already mapped and continues with the others. The output folder holds a record of the model and settings it was
made with; another model's maps are never mixed in.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from odeon_job import storage
from odeon_job.config import PredictConfig
from odeon_job.data.datamodule import PadToLargest
from odeon_job.data.images import ImageDataset, list_images, output_names
from odeon_job.data.raster import clear_remote_cache
from odeon_job.data.sampler import GroupShardSampler
from odeon_job.errors import ConfigError, DataError
from odeon_job.outputs.callbacks.progress_lines import format_duration
from odeon_job.outputs.callbacks.stitching import SceneStitcher
from odeon_job.outputs.callbacks.stop_handling import PredictionStop
from odeon_job.outputs.prediction_files import MAX_STITCH_BYTES, SIDECAR_SUFFIXES, sidecar_name, widest_band
from odeon_job.outputs.trained_model import TrainedModel, load_trained_model
from odeon_job.process.launch import is_first_process, prepare_launch, trainer_devices
from odeon_job.process.shutdown import GracefulStop, Terminated, is_sigterm_stop
from odeon_job.redaction import redact
from odeon_job.tasks.train import quiet_lightning

log = logging.getLogger("odeon")

#: The output folder's record of the model and settings its maps were made with.
RECORD_FILE = "odeon-predict.json"
#: Windows of this many pixels when neither the command nor the model gives a patch size.
DEFAULT_PATCH = 512
#: The line a prediction stopped by SIGTERM ends with.
STOPPED = "stopped by SIGTERM; the maps written are whole: run again to map the others"


@dataclass
class PredictResult:
    output: str
    written: list[str]
    skipped: list[str]


def record_of(config: PredictConfig, model: TrainedModel, patch: int) -> dict[str, Any]:
    """What makes two runs' maps the same kind: the model, its classes, the output type and the windows."""
    return {
        "model": redact(model.url),
        "classes": list(model.module.class_labels),
        "output_type": config.output_type,
        "patch_size": patch,
        "overlap": config.overlap,
    }


def check_output_folder(output: str, record: dict[str, Any], names: list[str], output_type: str) -> bool:
    """Refuse a folder that holds someone else's files or another model's maps; True when it holds a record of
    these settings (a rerun)."""
    record_url = storage.join(output, RECORD_FILE)
    if storage.exists(record_url):
        found = json.loads(storage.read_text(record_url))
        different = [
            key for key in ("model", "classes", "output_type", "patch_size", "overlap") if found.get(key) != record[key]
        ]
        if different:
            raise ConfigError(
                f"output: {output} holds maps made with another {', '.join(different)} "
                f"({', '.join(f'{key} {found.get(key)!r}' for key in different)}): choose another folder, or remove "
                "it to start again"
            )
        return True
    if storage.is_local(output) and not storage.exists(output):
        return False
    ours = {RECORD_FILE, *names}
    ours |= {sidecar_name(name, suffix) for name in names for suffix in SIDECAR_SUFFIXES.get(output_type, ())}
    strangers = [url for url in storage.glob(storage.join(output, "*")) if storage.basename(url) not in ours]
    if strangers:
        raise ConfigError(
            f"output: {output} holds files that are not this prediction's (such as {storage.basename(strangers[0])}): "
            "give a new or empty folder"
        )
    return False


class PredictProgress(pl.Callback):
    """A line every ``every`` seconds (and at the end): images and windows done, windows/s, ETA; plain text, for a
    terminal and a pod's log alike. Each process counts its own share (the first process's is shown)."""

    def __init__(self, sampler: GroupShardSampler, every: float) -> None:
        self.sampler, self.every = sampler, every
        self.windows = self.images = self.done = self.images_done = 0
        self.started = self.last = time.monotonic()

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """This process's share, known once the processes are up."""
        mine = self.sampler.mine()
        self.windows, self.images = sum(len(group) for group in mine), sum(1 for group in mine if len(group))
        self.started = self.last = time.monotonic()

    def image_done(self, row: int) -> None:
        self.images_done += 1

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.done += len(batch["index"])
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            log.info("predict: %s", self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.windows - self.done) / rate if rate > 0 else float("inf")
        eta = f", ETA {format_duration(left)}" if self.done < self.windows and rate > 0 else ""
        return (
            f"images {self.images_done}/{self.images}, windows {self.done}/{self.windows} ({rate:.1f} windows/s){eta}"
        )


def predict(config: PredictConfig, stop: GracefulStop | None = None) -> PredictResult:
    """Apply ``config.model`` to ``config.images``; returns the maps written and those already there."""
    own_stop = stop is None
    stop = stop or GracefulStop(config.device_setup.stop_grace_period).install()
    quiet_lightning()
    clear_remote_cache()
    model = load_trained_model(config.model)
    spec = model.spec
    samples = list_images(config.images)
    names = output_names(samples)
    patch = config.patch_size or model.source.patch_size or DEFAULT_PATCH
    output = config.output.rstrip("/")
    record = record_of(config, model, patch)
    rerun = check_output_folder(output, record, names, config.output_type)
    present = {storage.basename(url) for url in storage.glob(storage.join(output, "*.tif"))} if rerun else set()
    done = [name in present for name in names]  # (one listing, not a request per image)
    dataset = ImageDataset(samples, spec, patch, config.overlap)  # every header read and checked: errors first
    row, needed = widest_band(dataset.windows, spec.n_classes)
    if needed > MAX_STITCH_BYTES:  # a header may declare any width: refused before a band is allocated
        raise DataError(
            f"{samples[row].origin}: stitching its map holds {patch} rows of {int(dataset.windows.regions[row, 3])} "
            f"pixels for {spec.n_classes} classes, {needed / 2**30:.1f} GiB (at most {MAX_STITCH_BYTES / 2**30:.0f}): "
            "list parts of it in a CSV (image,col_off,row_off,width,height)"
        )
    devices = trainer_devices(config.device_setup)
    prepare_launch(devices)
    log.info(
        "predict: %d image(s) (%d already mapped), %d windows of %dx%d px, model %s (%d classes: %s) -> %s",
        len(samples),
        sum(done),
        sum(len(dataset.windows.items_of_row(row)) for row in range(len(samples)) if not done[row]),
        patch,
        patch,
        redact(model.url),
        spec.n_classes,
        ", ".join(spec.class_labels),
        redact(output),
    )
    # Every process shards the same list (done images as empty groups): they agree on who maps which image.
    groups = [range(0) if done[row] else dataset.windows.items_of_row(row) for row in range(len(samples))]
    sampler = GroupShardSampler(groups)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        collate_fn=PadToLargest(0, dataset.windows.largest),
        num_workers=config.device_setup.num_workers,
        prefetch_factor=config.device_setup.prefetch_factor,
    )
    written: list[str] = []
    progress = PredictProgress(sampler, config.progress_every)

    def scene_done(row: int) -> None:
        written.append(names[row])
        progress.image_done(row)

    stitcher = SceneStitcher(output, config.output_type, dataset, names=names, on_scene=scene_done)
    stopping = PredictionStop(stop, STOPPED)  # (after the stitcher: the batch in hand is written first)
    try:
        trainer = pl.Trainer(
            **devices,
            callbacks=[stitcher, progress, stopping],
            logger=False,
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
        )
    except (ValueError, TypeError, RuntimeError) as error:
        raise ConfigError(f"device_setup: {error}") from error
    if is_first_process() and not rerun:
        storage.write_text(storage.join(output, RECORD_FILE), json.dumps(record, indent=2) + "\n")
    # A process whose images are all mapped (or fewer images than processes) has nothing to do: not an error.
    model.module.allow_zero_length_dataloader_with_multiple_devices = True
    try:
        if len(sampler) or trainer.world_size > 1:
            trainer.predict(model.module, dataloaders=loader, return_predictions=False)
    except BaseException as error:
        # SIGTERM stops at once while starting (the handler raises Terminated), or after the batch in hand.
        if not isinstance(error, Terminated) and not is_sigterm_stop(error):
            raise
        raise Terminated(STOPPED) from None
    finally:
        if own_stop:
            stop.restore()
    log.info("predict: %s", progress.line())
    return PredictResult(output, written, [name for name, was_done in zip(names, done, strict=True) if was_done])
