"""``evaluate(model, data, output)``: a trained model scored on a labelled CSV without training, through the test
phase's own code (the module's test step, the test callbacks): the same history entry, figures and predictions as
the training's test. ``compare`` and ``gate`` decide whether a new model may replace another (CI's promotion gate).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl

from odeon_job import storage
from odeon_job.config import DeviceSetup, JobConfig, config_from_dict, upgrade_config
from odeon_job.data.datamodule import SegmentationDataModule
from odeon_job.data.samples import Splits, read_samples
from odeon_job.data.spec import describe_data
from odeon_job.data.windows import plan_windows
from odeon_job.errors import ConfigError
from odeon_job.outputs.callbacks.history import History
from odeon_job.outputs.loggers.figure_folder import FigureFolder
from odeon_job.outputs.run_folder import RunFolder
from odeon_job.outputs.trained_model import TrainedModel, load_trained_model
from odeon_job.process.launch import prepare_launch, trainer_devices
from odeon_job.redaction import redact, redact_values
from odeon_job.tasks.train import quiet_lightning
from odeon_job.tasks.training_outputs import test_callbacks

log = logging.getLogger("odeon")

#: CI's promotion gate: the new model is worse than the one it would replace.
EXIT_WORSE = 3


@dataclass
class Evaluated:
    model: str
    output: str
    #: The test history entry (every figure, both confusion matrices, the loss).
    entry: dict[str, Any]


def evaluation_config(model: TrainedModel, data: str, output_type: str, batch_size: int | None) -> JobConfig:
    """The model's own training configuration, with ``data`` as its test split: what the model was trained with
    (bands, classes, scaling, windows) reads the test data as the training's test did."""
    config = upgrade_config(json.loads(model.module.hparams.get("config_json") or "{}"), redact(model.url))
    source, spec = config["data_source"], model.spec
    source.update(
        test_file=data,
        image_bands=list(spec.image_bands),
        class_labels=list(model.module.class_labels),
        class_colors=list(model.module.class_colors),
    )
    config["output_setup"].update(
        get_prediction=True,
        prediction_output_type=output_type,
        save_history=True,
        use_tensorboard=False,
        use_mlflow=False,
        use_wandb=False,
    )
    if batch_size is not None:
        config["train_setup"]["batch_size"] = batch_size
    return config_from_dict(config, f"the configuration of {redact(model.url)}")


def evaluate(
    model_url: str,
    data: str,
    output: str,
    output_type: str = "class",
    batch_size: int | None = None,
    devices: DeviceSetup | None = None,
) -> Evaluated:
    """Score the model at ``model_url`` on the CSV ``data``; the test report goes to ``output`` (a new folder)."""
    quiet_lightning()
    output = output.rstrip("/")
    if storage.exists(output) and (not storage.is_local(output) or storage.is_nonempty_folder(output)):
        raise ConfigError(f"output: {output} already holds files: give a new folder for the report")
    model = load_trained_model(model_url)
    config = evaluation_config(model, data, output_type, batch_size)
    source, setup = config.data_source, config.train_setup
    splits = Splits(train=[], val=[], test=read_samples(data))
    spec = describe_data(source, splits.test[0])
    windows = plan_windows(splits, spec, source, setup.random_seed)
    device_setup = devices or DeviceSetup()  # this machine's, not the training's
    datamodule = SegmentationDataModule(
        splits,
        spec,
        source,
        setup.batch_size,
        device_setup.num_workers,
        windows=windows,
        test_by_scene=config.stitches_scenes,
    )
    datamodule.check_first_samples()
    placement = trainer_devices(device_setup)
    prepare_launch(placement)
    folder = RunFolder(output)
    history = History(None, folder.history_test)
    trainer = pl.Trainer(
        **placement,
        callbacks=test_callbacks(config, folder, datamodule, history),
        logger=[FigureFolder(folder.figures)],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    log.info("evaluate: %s on %s (%d rows)", redact(model.url), redact(data), len(splits.test))
    trainer.test(model.module, datamodule=datamodule, verbose=False)
    if trainer.is_global_zero:
        storage.write_text(
            folder.path("evaluated.json"),
            json.dumps(redact_values({"model": model.url, "data": data, "output_type": output_type}), indent=2) + "\n",
        )
    return Evaluated(model.url, output, next(iter(history.test_entry.values())))


def lower_is_better(metric: str) -> bool:
    return metric == "loss" or metric.endswith("/loss")


def is_worse(new: dict[str, Any], old: dict[str, Any], metric: str, margin: float) -> bool:
    """Whether ``new`` scores worse than ``old`` on ``metric`` by more than ``margin``; a missing or NaN figure of the
    new model is worse."""
    if metric not in old:
        raise ConfigError(f"--metric: {metric!r} is not a figure of the evaluation (such as Average/IoU, loss)")
    new_value, old_value = new.get(metric), old.get(metric)
    if new_value is None or (isinstance(new_value, float) and math.isnan(new_value)):
        return True
    if old_value is None:
        return False
    return new_value > old_value + margin if lower_is_better(metric) else new_value < old_value - margin


def comparison_lines(new: Evaluated, old: Evaluated, labels: list[str], metric: str) -> list[str]:
    """The per-class comparison printed by the gate: IoU of each class, then the averages and the loss."""

    def shown(value: Any) -> str:
        return "absent" if value is None else f"{value:.4f}"

    rows = [f"{label}/IoU" for label in labels] + ["Average/IoU", "Overall/Accuracy", "loss"]
    if metric not in rows:
        rows.append(metric)
    width = max(len(row) for row in rows)
    lines = [f"{'figure':<{width}}  {'new':>8}  {'against':>8}  {'change':>8}"]
    for row in rows:
        a, b = new.entry.get(row), old.entry.get(row)
        change = f"{a - b:+.4f}" if a is not None and b is not None else ""
        lines.append(
            f"{row:<{width}}  {shown(a):>8}  {shown(b):>8}  {change:>8}" + ("  <- gate" if row == metric else "")
        )
    return lines
