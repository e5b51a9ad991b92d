"""``output_setup``, ``device_setup`` and the whole job (``JobConfig``): the checks that need several sections."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from odeon_job.config.data_source import DataSource
from odeon_job.config.train_setup import TrainSetup
from odeon_job.config.values import (
    CONFIG_VERSION,
    DEFAULT_GRACE_PERIOD,
    Section,
    is_folder_name,
    lowercase,
    no_duplicates,
    odeon_error,
)
from odeon_job.errors import quote


def _device(value: Any) -> Any:
    """``device``: a count (int), one id or comma-separated ids (str), or a list of ids."""
    if value is None:
        return value
    if isinstance(value, bool):
        raise odeon_error(f'expected a number of devices, a device id like "0" or a list of ids, got {value}')
    if isinstance(value, int):
        if value < -1:
            raise odeon_error(f"a device count must be -1 (all), 0 (CPU) or positive, got {value}")
        return value
    if isinstance(value, str):
        if not re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*,?\s*", value):
            raise odeon_error(f'{quote(value)} is not a device id ("0") or list of ids ("0,1")')
        return value
    if isinstance(value, list):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise odeon_error(f"a list of devices must hold device ids (integers >= 0), got {value}")
        no_duplicates(value)
        return value
    raise odeon_error(f'expected a number of devices, a device id like "0" or a list of ids, got {quote(value)}')


class OutputSetup(Section):
    """Where and what the job writes."""

    output_folder: str = Field(description="Folder (or URL) under which the run folder is created.")
    model_filename: str | None = Field(None, description="Base name of saved models; the model name when absent.")
    model_out_ext: Literal[".ckpt", ".pth"] | None = Field(
        None,
        description='".ckpt" (Lightning checkpoints) or ".pth"; from model_filename\'s extension, '
        'else ".ckpt", when absent.',
    )
    name_exp_log: str | None = Field(None, description="Experiment folder; the start date (YYYY-MM-DD) when absent.")
    version_name: str | None = Field(
        None, description="Version folder inside the experiment; the start time (HH-MM-SS) when absent."
    )
    get_prediction: bool = Field(False, description="Write a GeoTIFF prediction for each test tile.")
    prediction_output_type: Literal["bit", "uint8", "float32", "class"] = Field(
        "uint8",
        description="bit, uint8 or float32 (a band per class), or (an extension) class: one band of class indices "
        "with the classes' colours and names, the map a GIS opens.",
    )
    use_tensorboard: bool = Field(True, description="Log to TensorBoard.")
    use_wandb: bool = Field(False, description="Log to Weights & Biases.")
    log_learning_rate: bool = Field(False, description="Log the learning rate (and momentum).")
    save_history: bool = Field(True, description="Write the per-epoch validation metrics as JSON.")
    save_top_k: int = Field(3, ge=1, description="Checkpoints kept per monitored metric (val_loss, val_miou).")
    progress: int = Field(
        1,
        ge=0,
        description="Progress bar refresh rate in batches, on a terminal; elsewhere (a pod's log, a pipe) a plain "
        "line every progress_every seconds; 0 shows no progress.",
    )
    progress_every: float = Field(
        30.0,
        gt=0,
        description="Extension: seconds between two progress lines where no terminal shows a bar (epoch, step, "
        "samples/s, epoch and run ETA).",
    )
    use_mlflow: bool = Field(
        True,
        description="Extension: record the run in MLflow (a local SQLite store "
        "under output_folder unless a tracking URI is given).",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="Extension: the MLflow tracking server or store; "
        "$MLFLOW_TRACKING_URI, else the local store, when absent.",
    )
    mlflow_experiment: str | None = Field(None, description="Extension: MLflow experiment; name_exp_log when absent.")
    mlflow_run_name: str | None = Field(
        None, description="Extension: MLflow run name; name_exp_log/version_name (the run folder's) when absent."
    )
    registered_model_name: str | None = Field(
        None, description="Extension: register the best model under this name in MLflow's model registry."
    )
    mlflow_required: bool = Field(
        False,
        description="Extension: stop the job when MLflow cannot be reached "
        "(by default the training goes on and says at the end what was not logged).",
    )

    @field_validator("model_out_ext", mode="before")
    @classmethod
    def _leading_dot(cls, value: Any) -> Any:
        return "." + value if isinstance(value, str) and not value.startswith(".") else value

    @field_validator("name_exp_log", "version_name")
    @classmethod
    def _one_folder(cls, value: str | None) -> str | None:
        if value is not None and not is_folder_name(value):
            raise odeon_error(f"must be a single folder name, got {quote(value)}")
        return value


class DeviceSetup(Section):
    """Which devices and how many processes."""

    accelerator: Annotated[
        Literal["auto", "cpu", "gpu", "cuda", "tpu", "ipu", "hpu", "mps"] | None, BeforeValidator(lowercase)
    ] = Field(None, description="cpu, gpu, tpu, ipu, hpu, mps or auto; auto (a GPU when one is visible) when absent.")
    device: Annotated[int | str | list[int] | None, BeforeValidator(_device)] = Field(
        None,
        description='Number of devices (int; 0 means CPU, -1 all), an id ("0") or ids ([0, 1]); '
        "one device when absent.",
    )
    num_nodes: int = Field(1, ge=1, description="Number of machines (pods) for distributed training.")
    num_workers: int = Field(4, ge=0, description="DataLoader worker processes; 0 reads in the main process.")
    num_processes: int = Field(1, ge=1, description="Processes for distributed training with accelerator cpu.")
    strategy: str | None = Field(None, description="Lightning strategy (ddp, ...); chosen by Lightning when absent.")
    pin_memory: bool | None = Field(
        None,
        description="Extension: page-locked batches for faster copies to the "
        "GPU; on when training on GPUs, when absent.",
    )
    persistent_workers: bool | None = Field(
        None,
        description="Extension: keep DataLoader workers between "
        "epochs (no restart cost); on when num_workers > 0, when absent.",
    )
    prefetch_factor: int | None = Field(
        None,
        ge=1,
        description="Extension: batches each DataLoader worker "
        "prepares ahead; PyTorch's 2 when absent. Needs num_workers > 0.",
    )
    stop_grace_period: float = Field(
        DEFAULT_GRACE_PERIOD,
        gt=0,
        description="Extension: seconds between SIGTERM (pod eviction, preemption) "
        "and the forced exit; the training stops after the current batch, keeps its last checkpoint and exits with "
        "status 143. Keep it below the pod's terminationGracePeriodSeconds (Kubernetes' default 30).",
    )

    @model_validator(mode="after")
    def _prefetch_needs_workers(self) -> DeviceSetup:
        if self.prefetch_factor is not None and self.num_workers == 0:
            raise odeon_error(
                "needs num_workers > 0 (batches are prefetched by worker processes)", field="prefetch_factor"
            )
        if self.persistent_workers and self.num_workers == 0:
            raise odeon_error("needs num_workers > 0", field="persistent_workers")
        return self


class JobConfig(Section):
    """A training job: the JSON given to ``odeon train -c``."""

    config_version: int = Field(
        CONFIG_VERSION,
        ge=1,
        le=CONFIG_VERSION,
        description="Extension: the version of "
        "this configuration's format; this one when absent. Configurations (and "
        "checkpoints) of an older version are upgraded when read; a newer one is refused.",
    )
    data_source: DataSource
    train_setup: TrainSetup
    output_setup: OutputSetup
    device_setup: DeviceSetup = Field(default_factory=DeviceSetup)

    @model_validator(mode="before")
    @classmethod
    def _export_checkpoint_anywhere(cls, data: Any) -> Any:
        """ODEON merges its four sections, so its configurations may give ``export_checkpoint`` in
        ``output_setup``: it is taken to ``train_setup``, where the specification lists it."""
        if not isinstance(data, dict) or not isinstance(data.get("output_setup"), dict):
            return data
        out = dict(data["output_setup"])
        if "export_checkpoint" not in out:
            return data
        value = out.pop("export_checkpoint")
        setup = dict(data.get("train_setup") or {}) if isinstance(data.get("train_setup"), dict) else None
        if setup is None:
            return data
        if setup.get("export_checkpoint", value) != value:
            raise odeon_error(
                "given in both output_setup and train_setup with different values: keep one",
                field="train_setup.export_checkpoint",
            )
        setup["export_checkpoint"] = value
        return {**data, "output_setup": out, "train_setup": setup}

    @property
    def stitches_scenes(self) -> bool:
        """Test predictions are stitched, one file per scene (scenes read in windows), not one per tile."""
        return self.output_setup.get_prediction and self.data_source.reads_scenes

    @model_validator(mode="after")
    def _predictions_need_a_test_set(self) -> JobConfig:
        if self.output_setup.get_prediction and not self.data_source.test_file:
            raise odeon_error(
                "predictions are made for the test set: give data_source.test_file", field="output_setup.get_prediction"
            )
        return self

    @model_validator(mode="after")
    def _counts_agree(self) -> JobConfig:
        """What the configuration alone tells (bands listed); the first files tell the rest (data/spec.py)."""
        source = self.data_source
        problem = count_problem(
            source,
            self.train_setup.per_class_weights,
            len(source.image_bands) if source.image_bands else None,
            len(source.mask_bands) if source.mask_bands else None,
            "image_bands selects",
            "mask_bands selects",
        )
        if problem:
            raise odeon_error(problem[1], field=problem[0])
        return self


def count_problem(
    source: DataSource,
    weights: Mapping[str, Sequence[float] | None],
    image_bands: int | None,
    mask_bands: int | None,
    images: str,
    masks: str,
) -> tuple[str, str] | None:
    """The first disagreement between the counts of bands and classes, as (field, message); None when they
    agree. The one place these counts are checked: by the schema with the bands the configuration lists,
    then with those of the first training files. ``image_bands``/``mask_bands``: how many bands are read
    (None: not known yet); ``images``/``masks``: what says so, for messages ("mask_bands selects");
    ``weights``: the lists of one weight per class, by field (``TrainSetup.per_class_weights``)."""
    labels = source.class_labels
    classes: int | None = None
    if mask_bands == 1:
        if labels is None or len(labels) < 2:
            return (
                "data_source.class_labels",
                f"{masks} a single band, read as class indices 0..n-1: "
                "class_labels must name the n classes (at least 2)",
            )
        classes = len(labels)
    elif mask_bands is not None:
        if labels is not None and len(labels) != mask_bands:
            return (
                "data_source.class_labels",
                f"{len(labels)} labels but {masks} {mask_bands} bands (one band per class)",
            )
        classes = mask_bands
    known = classes if classes is not None else (len(labels) if labels is not None else None)
    if source.class_colors is not None and known is not None and len(source.class_colors) != known:
        return "data_source.class_colors", f"{len(source.class_colors)} colours but there are {known} classes"
    for field, values in weights.items():
        if values is not None and classes is not None and len(values) != classes:
            return field, f"{len(values)} weights but there are {classes} classes"
    for split, stats in (source.normalization_weights or {}).items():
        if image_bands is not None and len(stats.mean) != image_bands:
            return (
                f"data_source.normalization_weights.{split}.mean",
                f"{len(stats.mean)} values but {images} {image_bands} bands",
            )
    return None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the configuration, for editors and CI checks."""
    schema = JobConfig.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
