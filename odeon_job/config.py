"""The job's configuration: the four sections of the specification's JSON, validated by pydantic.

Every key and default is the specification's (``../shared/spec/odeon-train.rst``); the few keys we
add are marked "extension" in their description and listed in the README. Unknown keys are errors,
so a misspelt key never silently falls back to a default.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from odeon_job import catalog, storage
from odeon_job.errors import ConfigError, did_you_mean, quote
from odeon_job.redaction import shorten

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = typing.get_args(Split)
Augmentation = Literal["rotation90", "rotation", "radiometry"]
# Derived from the catalog, the one list of names (Literal[...] of a tuple is the union of its values): pydantic
# checks them at run time; to a type checker, built at run time, they are strings.
if typing.TYPE_CHECKING:
    ModelName: typing.TypeAlias = str
    LossName: typing.TypeAlias = str
    OptimizerName: typing.TypeAlias = str
    SchedulerName: typing.TypeAlias = str
else:
    ModelName = Literal[tuple(catalog.MODELS)]
    LossName = Literal[tuple(catalog.LOSSES)]
    OptimizerName = Literal[catalog.OPTIMIZERS]
    SchedulerName = Literal[catalog.SCHEDULERS]
Monitor = Literal["val_loss", "val_miou"]
#: The direction in which each monitored metric improves.
MONITOR_MODES = {"val_loss": "min", "val_miou": "max"}
Precision = Literal["32", "16-mixed", "bf16-mixed"]

#: The format of the configuration (and of the hyperparameters in checkpoints) this version writes.
CONFIG_VERSION = 2
#: The most pixels along a side of what goes through the network in one piece (a window of a scene, or a tile
#: read whole): 8192² pixels already take gigabytes of activations per item in the smallest model, and past
#: 2^31 elements per tensor some convolutions fail outright.
MAX_ITEM_SIDE = 8192
#: Seconds between SIGTERM and the end of the job: below Kubernetes' default terminationGracePeriodSeconds
#: (30), with room to upload what is staged.
DEFAULT_GRACE_PERIOD = 20.0


def _resolution_pairs_per_split(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 → 2: a two-number ``resolution`` list was an [x, y] pixel size; version 2 reads lists as ODEON
    does (one entry per split) and refuses two different numbers as ambiguous, so a version-1 pair with x != y
    becomes the same pair for every split."""
    source = data.get("data_source")
    value = source.get("resolution") if isinstance(source, dict) else None
    if (
        isinstance(source, dict)
        and isinstance(value, list)
        and len(value) == 2
        and not any(isinstance(v, list) for v in value)
        and value[0] != value[1]
    ):
        data["data_source"] = {**source, "resolution": {split: list(value) for split in SPLITS}}
    return data


#: ``UPGRADES[n]`` turns a configuration of version n into version n + 1.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _resolution_pairs_per_split}

#: The specification's default learning-rate scheduler (also the defaults of its keys when named).
REDUCE_LR_ON_PLATEAU_DEFAULTS: dict[str, Any] = {
    "mode": "min",
    "factor": 0.5,
    "patience": 10,
    "min_lr": 1e-7,
    "cooldown": 4,
}


def _error(message: str, field: str | None = None) -> PydanticCustomError:
    """A validation error with a message of our own; ``field`` names the key below the failing model."""
    return PydanticCustomError("odeon", message, {"field": field} if field else None)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _model_name(value: Any) -> Any:
    value = _lower(value)
    if value == "resnet150":
        raise _error("'resnet150' is a slip in the specification: the ResNet with 152 layers is 'resnet152'")
    return value


def _precision(value: Any) -> Any:
    """Lightning's spellings of full precision (32, "32-true") are the same "32"."""
    return "32" if value in (32, "32-true") else value


def _band_index(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value < 1:
        raise _error(f"band indices are 1-based, as in GDAL: {value} is not a band")
    return value


def _no_duplicates(values: list[Any] | None) -> list[Any] | None:
    """The first value listed twice is an error (one pass: a list of millions of labels is checked at once)."""
    if values is not None:
        seen: set[Any] = set()
        for value in values:
            if value in seen:
                raise _error(f"{quote(value)} is listed twice")
            seen.add(value)
    return values


def is_folder_name(value: str) -> bool:
    """One folder name: not empty, no separator, not ``.`` or ``..`` (a run folder stays inside its parent)."""
    return bool(value.strip()) and "/" not in value and "\\" not in value and value not in (".", "..")


def _one_or_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _device(value: Any) -> Any:
    """``device``: a count (int), one id or comma-separated ids (str), or a list of ids."""
    if value is None:
        return value
    if isinstance(value, bool):
        raise _error(f'expected a number of devices, a device id like "0" or a list of ids, got {value}')
    if isinstance(value, int):
        if value < -1:
            raise _error(f"a device count must be -1 (all), 0 (CPU) or positive, got {value}")
        return value
    if isinstance(value, str):
        if not re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*,?\s*", value):
            raise _error(f'{quote(value)} is not a device id ("0") or list of ids ("0,1")')
        return value
    if isinstance(value, list):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise _error(f"a list of devices must hold device ids (integers >= 0), got {value}")
        _no_duplicates(value)
        return value
    raise _error(f'expected a number of devices, a device id like "0" or a list of ids, got {quote(value)}')


def _val_check_interval(value: Any) -> Any:
    """A float fraction of the epoch in (0, 1], or an int number of training batches (>= 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _error(
            f"expected a fraction of an epoch (0 < float <= 1.0) or a number of batches (int >= 1), got {quote(value)}"
        )
    if isinstance(value, int) and value < 1:
        raise _error(f"a number of batches must be >= 1, got {value}")
    if isinstance(value, float) and not 0.0 < value <= 1.0:
        raise _error(f"a fraction of an epoch must be in (0, 1], got {value}")
    return value


def _resolution(value: Any) -> Any:
    """A pixel size (x = y), an ``[x, y]`` pair, or per split: a dict of either, or ODEON's list, one per split
    in the order train, val, test (a missing test takes the last one, as ODEON's code does)."""

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0

    def one(v: Any) -> Any:
        if number(v):
            return float(v)
        if isinstance(v, list) and len(v) == 2 and all(number(x) for x in v):
            return [float(x) for x in v]
        raise _error(f"a resolution is a positive pixel size or an [x, y] pair of them, got {quote(v)}")

    if value is None:
        return value
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(SPLITS))
        if unknown:
            raise _error(f"{quote(unknown[0])} is not a split (train, val, test)")
        return {split: one(v) for split, v in value.items()}
    per_split = isinstance(value, list) and (
        len(value) == 3 or (len(value) in (1, 2) and any(isinstance(v, list) for v in value))
    )
    if per_split:
        return {split: one(value[min(i, len(value) - 1)]) for i, split in enumerate(SPLITS)}
    if isinstance(value, list) and len(value) == 2 and all(number(v) for v in value) and value[0] != value[1]:
        raise _error(
            f"{quote(value)} is ambiguous: ODEON reads it as train {value[0]}, val and test {value[1]}; a "
            f'pixel size would be x {value[0]}, y {value[1]}. Write {{"train": {value[0]}, "val": '
            f'{value[1]}, "test": {value[1]}}} for the first, [{quote(value)}] (one pair for every split) '
            "for the second"
        )
    return one(value)


BandList = Annotated[list[Annotated[int, BeforeValidator(_band_index)]], Field(min_length=1)]
PixelSize = float | list[float]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NormalizationStats(_Section):
    """Mean and standard deviation of each selected image band, in the 0-1 range."""

    mean: list[float] = Field(min_length=1)
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> NormalizationStats:
        if len(self.mean) != len(self.std):
            raise _error(f"{len(self.std)} values but mean has {len(self.mean)}", field="std")
        return self


class DataSource(_Section):
    """Where the tiles are and how to read them."""

    train_file: str = Field(description="CSV of image,mask pairs for the train split.")
    val_file: str | None = Field(
        None, description="CSV for the validation split; without it, percentage_val of the train CSV is held out."
    )
    test_file: str | None = Field(None, description="CSV for the test split, evaluated after training.")
    percentage_val: float = Field(
        0.3, gt=0, lt=1, description="Fraction of train_file held out for validation when val_file is absent."
    )
    image_bands: BandList | None = Field(None, description="1-based image bands to use; all bands when absent.")
    mask_bands: BandList | None = Field(
        None,
        description="1-based mask bands, one per class; all bands when "
        "absent. A single band is read as class indices 0..n-1.",
    )
    class_labels: list[str] | None = Field(None, description="One label per class; 'class 1'...'class n' when absent.")
    resolution: Annotated[PixelSize | dict[Split, PixelSize] | None, BeforeValidator(_resolution)] = Field(
        None,
        description="Pixel size to read the tiles at (resampled when it differs from the files'), "
        "for the whole dataset or per split; the files' own when absent.",
    )
    normalization_weights: dict[Split, NormalizationStats] | None = Field(
        None, description="Per split mean/std (0-1 range) for (x - mean) / std; scaling to 0-1 only when absent."
    )
    data_augmentation: dict[Split, Annotated[list[Augmentation], BeforeValidator(_one_or_list)]] | None = Field(
        None, description="Augmentations per split (train only): rotation90, rotation, radiometry."
    )
    mask_nodata: float | Literal["auto", "file", "none"] = Field(
        "auto",
        description="Extension: the mask value whose pixels are ignored (left out of the loss and the "
        'metrics): a number, "file" (the mask file\'s own nodata value, if it declares one), "none", or '
        '"auto": the file\'s own unless it could also be data (a class index, an "on" value of one-hot '
        'bands), which is then an error asking for "file" or "none". Pixels of a one-hot mask where no '
        "selected band is on are always ignored.",
    )
    image_max_value: float | None = Field(
        None,
        gt=0,
        description="Extension: the raw value that scales to 1.0. Defaults to 255 for uint8 "
        "images and is required for any other data type (e.g. 10000 for Sentinel-2 L2A).",
    )
    patch_size: int | None = Field(
        None,
        ge=8,
        description="Extension: read every CSV row as a scene of any size, in windows of patch_size x "
        "patch_size pixels (at the split's resolution): random windows for training (train_windows), a regular grid "
        "for validation and test (grid_overlap). Without it each row is one tile, read whole, as the specification "
        "says. A row may add col_off,row_off,width,height (the image's pixels) to use only that window of its scene.",
    )
    train_windows: Annotated[int, Field(ge=1)] | Literal["area"] = Field(
        "area",
        description="Extension, with patch_size: random training windows per epoch: a number in all (scenes "
        'drawn in proportion to their area), or "area": each scene gives as many as it holds patches.',
    )
    grid_overlap: int = Field(
        0,
        ge=0,
        description="Extension, with patch_size: pixels shared by neighbouring "
        "windows of the validation and test grids. Predictions average the overlaps; metrics "
        "count every pixel once.",
    )

    @field_validator("image_bands", "mask_bands", "class_labels")
    @classmethod
    def _unique(cls, values: list[Any] | None) -> list[Any] | None:
        return _no_duplicates(values)

    @field_validator("mask_nodata")
    @classmethod
    def _finite_nodata(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not math.isfinite(value):
            raise _error(
                f'{value} matches no pixel of an integer mask: give a finite number, or "file" to ignore '
                "the pixels of each mask's own nodata (NaN included, in a float mask)"
            )
        return value

    @model_validator(mode="after")
    def _windows_need_a_patch_size(self) -> DataSource:
        for key in ("train_windows", "grid_overlap"):  # (a saved configuration holds their defaults: those pass)
            if self.patch_size is None and getattr(self, key) != type(self).model_fields[key].default:
                raise _error("applies to scenes read in windows: set data_source.patch_size too", field=key)
        if self.patch_size is not None and self.patch_size > MAX_ITEM_SIDE:
            raise _error(
                f"{self.patch_size} pixels: at most {MAX_ITEM_SIDE} (a window goes through the network in one "
                f"piece, and {MAX_ITEM_SIDE}² pixels already take gigabytes of activations per window); "
                "windows of 256 to 1024 pixels are usual",
                field="patch_size",
            )
        if self.patch_size is not None and self.grid_overlap >= self.patch_size:
            raise _error(
                f"{self.grid_overlap} pixels, but windows are {self.patch_size} wide: the overlap must be "
                "smaller than patch_size",
                field="grid_overlap",
            )
        return self

    @field_validator("data_augmentation")
    @classmethod
    def _train_only(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        for split in ("val", "test"):
            if value and value.get(split):
                raise _error(f"augmentations apply to the train split only, got {value[split]}", field=split)
        return value


class OptimizerConfig(BaseModel):
    """``optimizer`` names the optimizer; every other key is passed to its constructor."""

    model_config = ConfigDict(extra="allow")

    optimizer: Annotated[OptimizerName, BeforeValidator(_lower)] = Field(
        "adam", description=f"{catalog.spoken(catalog.OPTIMIZERS)}; other keys are its arguments."
    )

    @model_validator(mode="after")
    def _lr_is_a_rate(self) -> OptimizerConfig:
        lr = (self.model_extra or {}).get("lr")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
            raise _error(f"a learning rate is a positive number, got {quote(lr)}", field="lr")
        return self

    @property
    def lr(self) -> float | None:
        """The optimizer's own learning rate, which wins over ``train_setup.lr`` (ODEON's code ignored it)."""
        lr = (self.model_extra or {}).get("lr")
        return float(lr) if lr is not None else None

    @property
    def arguments(self) -> dict[str, Any]:
        """The constructor's arguments other than ``lr`` (given on its own, see ``TrainSetup.learning_rate``)."""
        return {k: v for k, v in (self.model_extra or {}).items() if k != "lr"}


class SchedulerConfig(BaseModel):
    """``scheduler`` names the learning-rate scheduler; every other key is passed to its constructor."""

    model_config = ConfigDict(extra="allow")

    scheduler: Annotated[SchedulerName, BeforeValidator(_lower)] = Field(
        "reducelronplateau", description=f"{catalog.spoken(catalog.SCHEDULERS)}; other keys are its arguments."
    )

    @model_validator(mode="before")
    @classmethod
    def _plateau_defaults(cls, data: Any) -> Any:
        """Keys of ReduceLROnPlateau that the user leaves out take the specification's defaults."""
        if isinstance(data, dict) and _lower(data.get("scheduler", "reducelronplateau")) == "reducelronplateau":
            return {**REDUCE_LR_ON_PLATEAU_DEFAULTS, **data}
        return data

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EarlyStopping(_Section):
    """Stop when the monitored validation metric has not improved for ``patience`` validations; the other
    keys are Lightning's EarlyStopping arguments (ODEON passes them through too)."""

    monitor: Monitor = Field("val_loss", description="val_loss (minimised) or val_miou (maximised).")
    patience: int = Field(30, ge=1, description="Validations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")
    mode: Literal["min", "max"] | None = Field(
        None,
        description="min for val_loss, max for val_miou (the "
        "only direction each can improve in); from monitor when absent.",
    )
    check_finite: bool = Field(True, description="Stop when the monitored metric becomes NaN or infinite.")
    stopping_threshold: float | None = Field(None, description="Stop as soon as the metric reaches this value.")
    divergence_threshold: float | None = Field(None, description="Stop as soon as the metric is worse than this.")
    strict: bool = Field(True, description="Fail when the monitored metric is missing.")
    verbose: bool = Field(False, description="Accepted for ODEON's configurations: the job always says why it stopped.")

    @model_validator(mode="after")
    def _mode_fits_monitor(self) -> EarlyStopping:
        expected = MONITOR_MODES[self.monitor]
        if self.mode is not None and self.mode != expected:
            raise _error(
                f"{self.monitor} improves only when it {'falls' if expected == 'min' else 'rises'}: mode "
                f"must be {expected!r} (or left out), got {self.mode!r}",
                field="mode",
            )
        return self

    @property
    def arguments(self) -> dict[str, Any]:
        """Lightning's EarlyStopping arguments."""
        return {
            "monitor": self.monitor,
            "mode": MONITOR_MODES[self.monitor],
            "patience": self.patience,
            "min_delta": self.min_delta,
            "check_finite": self.check_finite,
            "strict": self.strict,
            "stopping_threshold": self.stopping_threshold,
            "divergence_threshold": self.divergence_threshold,
        }


class ModelParams(_Section):
    """Architecture options: ``upsampling`` for the U-Nets, ``output_stride`` for deeplab."""

    upsampling: Literal["bilinear", "transposed"] = Field(
        "bilinear",
        description="U-Net decoders (unet, lightunet, resnet*): bilinear x2 upsampling or a "
        "transposed convolution of stride 2.",
    )
    align_corners: bool = Field(
        False,
        description="U-Net decoders with bilinear upsampling: interpolate with "
        "align_corners=True, as ODEON's unet and lightunet do (set by itself when "
        "init_weights holds ODEON weights).",
    )
    output_stride: Literal[8, 16] = Field(8, description="deeplab: the backbone's output stride (8 or 16).")

    @model_validator(mode="after")
    def _corners_need_bilinear(self) -> ModelParams:
        if self.align_corners and self.upsampling != "bilinear":
            raise _error('applies to bilinear upsampling, but upsampling is "transposed"', field="align_corners")
        return self


class LossParams(_Section):
    """Loss options: ``gamma`` and ``alpha`` for focal, the two weights for combo."""

    gamma: float = Field(2.0, ge=0, description="focal: the focusing parameter.")
    alpha: Annotated[float, Field(gt=0)] | list[Annotated[float, Field(ge=0)]] | None = Field(
        None, description="focal: a weight for every pixel (float) or one per class (list); none when absent."
    )
    bce_weight: float = Field(0.75, ge=0, description="combo: weight of the binary cross-entropy.")
    jaccard_weight: float = Field(0.25, ge=0, description="combo: weight of the soft-Jaccard loss.")


def _changed(section: BaseModel) -> list[str]:
    """The keys of ``section`` whose value differs from their default."""
    return [name for name, field in type(section).model_fields.items() if getattr(section, name) != field.default]


#: Which keys of model_params / loss_params apply to which model or loss.
_MODEL_PARAM_USERS = {key: catalog.users_of(key, catalog.MODELS) for key in ModelParams.model_fields}
_LOSS_PARAM_USERS = {key: catalog.users_of(key, catalog.LOSSES) for key in LossParams.model_fields}
#: Models whose encoder accepts torchvision ImageNet-style weights (encoder_weights).
PRETRAINABLE_ENCODERS = tuple(name for name, model in catalog.MODELS.items() if model.pretrainable_encoder)
#: Models with ODEON's U-Net layer names (the odeon_pth export).
ODEON_U_NETS = tuple(name for name, model in catalog.MODELS.items() if model.odeon_u_net)


class TrainSetup(_Section):
    """The model and how to train it."""

    model_name: Annotated[ModelName, BeforeValidator(_model_name)] = Field(
        description=f"{catalog.spoken(list(catalog.MODELS))}."
    )
    model_params: ModelParams = Field(
        default_factory=ModelParams, description="Extension: architecture options (upsampling, output_stride)."
    )
    init_weights: str | None = Field(
        None,
        description="Extension: path or URL of weights for the whole model (a state dict or one of our checkpoints).",
    )
    encoder_weights: str | None = Field(
        None,
        description="Extension: path or URL of a torchvision "
        "ImageNet-style state dict for a resnet or deeplab encoder.",
    )
    epochs: int = Field(1000, ge=1, description="Number of training epochs.")
    batch_size: int = Field(3, ge=1, description="Samples per mini-batch (per process).")
    lr: float = Field(0.001, gt=0, description="Starting learning rate.")
    loss: Annotated[LossName, BeforeValidator(_lower)] = Field(
        "ce", description=f"{catalog.spoken(list(catalog.LOSSES))}."
    )
    loss_params: LossParams = Field(
        default_factory=LossParams, description="Extension: loss options (gamma, alpha, bce_weight, jaccard_weight)."
    )
    class_imbalance: list[Annotated[float, Field(ge=0)]] | None = Field(
        None, description="One weight per class for the loss (ce only)."
    )
    optimizer_config: OptimizerConfig | None = Field(None, description="Optimizer and its arguments; Adam when absent.")
    scheduler_config: SchedulerConfig | None = Field(
        None,
        description="Scheduler and its arguments; ReduceLROnPlateau(mode=min, factor=0.5, "
        "patience=10, min_lr=1e-7, cooldown=4) on val_loss when absent.",
    )
    early_stopping: EarlyStopping | None = Field(None, description="Early stopping; none when absent.")
    continue_training: bool | Literal["auto"] = Field(
        False,
        description='Resume from the last checkpoint of the version folder. Extension: "auto" resumes '
        "when that checkpoint exists and starts afresh otherwise (a restarted pod continues its run).",
    )
    export_checkpoint: Annotated[list[Literal[".pth", "odeon_pth"]] | None, BeforeValidator(_one_or_list)] = Field(
        None,
        description='Extra formats to export saved checkpoints to: ".pth" (the network\'s state dict) and '
        '"odeon_pth" (unet, lightunet: the same under ODEON\'s layer names, file .odeon.pth). Also read from '
        "output_setup, where ODEON's configurations may put it.",
    )
    val_check_interval: Annotated[int | float, BeforeValidator(_val_check_interval)] = Field(
        1.0, description="Validate after this fraction of an epoch (float) or this many batches (int)."
    )
    deterministic: bool = Field(False, description="Use deterministic algorithms where PyTorch has them.")
    random_seed: int = Field(42, description="Seed of every random number generator (and of the val split).")
    testing: bool = Field(False, description="Smoke run: a few batches per epoch and split.")
    precision: Annotated[Precision, BeforeValidator(_precision)] = Field(
        "32",
        description='Extension: "32" (full precision, as the specification\'s results assume), '
        '"16-mixed" (GPU) or "bf16-mixed" (GPU, or CPU).',
    )
    channels_last: bool = Field(
        False,
        description="Extension: keep the model's weights and inputs in the "
        "channels-last memory format (faster convolutions on recent GPUs, with mixed "
        "precision).",
    )
    compile: bool = Field(
        False,
        description="Extension: compile the network with torch.compile (minutes of "
        "compilation at start-up, then faster steps on GPUs).",
    )

    @property
    def per_class_weights(self) -> dict[str, list[float] | None]:
        """The lists of one weight per class, by field: ``class_imbalance`` and a list ``loss_params.alpha``."""
        alpha = self.loss_params.alpha
        return {
            "train_setup.class_imbalance": self.class_imbalance,
            "train_setup.loss_params.alpha": alpha if isinstance(alpha, list) else None,
        }

    @property
    def learning_rate(self) -> float:
        """The starting learning rate: ``optimizer_config.lr`` when given (it wins; ODEON ignored it), else ``lr``."""
        own = self.optimizer_config.lr if self.optimizer_config is not None else None
        return own if own is not None else self.lr

    @field_validator("export_checkpoint", mode="before")
    @classmethod
    def _dot_pth(cls, value: Any) -> Any:
        values = _one_or_list(value)
        return (
            [v if not isinstance(v, str) or v.startswith(".") or v == "odeon_pth" else "." + v for v in values]
            if values
            else values
        )

    @model_validator(mode="after")
    def _options_fit_model_and_loss(self) -> TrainSetup:
        if self.class_imbalance is not None and not catalog.LOSSES[self.loss].class_weights:
            weighted = [name for name, loss in catalog.LOSSES.items() if loss.class_weights]
            raise _error(
                f"weights the {catalog.spoken(weighted)} loss only, but loss is {self.loss!r}", field="class_imbalance"
            )
        # A value other than the default for a model or loss that does not use it is a mistake (a default
        # is fine: resolved configs, such as the saved config.json, carry every key).
        for key in _changed(self.model_params):
            if self.model_name not in _MODEL_PARAM_USERS[key]:
                raise _error(
                    f"applies to {', '.join(_MODEL_PARAM_USERS[key])}, not {self.model_name}",
                    field=f"model_params.{key}",
                )
        for key in _changed(self.loss_params):
            if self.loss not in _LOSS_PARAM_USERS[key]:
                raise _error(
                    f"applies to the {_LOSS_PARAM_USERS[key][0]} loss, not {self.loss}", field=f"loss_params.{key}"
                )
        if self.model_name == "deeplab" and self.batch_size < 2:
            raise _error(
                "deeplab needs at least 2 samples per batch (the image-pooling branch of its ASPP has batch norm)",
                field="batch_size",
            )
        if "odeon_pth" in (self.export_checkpoint or []) and self.model_name not in ODEON_U_NETS:
            raise _error(
                f'"odeon_pth" writes ODEON\'s U-Net layer names: {catalog.spoken(ODEON_U_NETS)} only, '
                f"not {self.model_name}",
                field="export_checkpoint",
            )
        if self.encoder_weights is not None and self.model_name not in PRETRAINABLE_ENCODERS:
            raise _error(
                f"{self.model_name} has no pretrainable encoder (resnet* and deeplab do); use "
                "init_weights for weights of the whole model",
                field="encoder_weights",
            )
        return self


class OutputSetup(_Section):
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
    prediction_output_type: Literal["bit", "uint8", "float32"] = Field("uint8", description="bit, uint8 or float32.")
    use_tensorboard: bool = Field(True, description="Log to TensorBoard.")
    use_wandb: bool = Field(False, description="Log to Weights & Biases.")
    log_learning_rate: bool = Field(False, description="Log the learning rate (and momentum).")
    save_history: bool = Field(True, description="Write the per-epoch validation metrics as JSON.")
    save_top_k: int = Field(3, ge=1, description="Checkpoints kept per monitored metric (val_loss, val_miou).")
    progress: int = Field(1, ge=0, description="Progress bar refresh rate in batches; 0 hides the bars.")
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
    mlflow_run_name: str | None = Field(None, description="Extension: MLflow run name; version_name when absent.")
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
            raise _error(f"must be a single folder name, got {quote(value)}")
        return value


class DeviceSetup(_Section):
    """Which devices and how many processes."""

    accelerator: Annotated[
        Literal["auto", "cpu", "gpu", "cuda", "tpu", "ipu", "hpu", "mps"] | None, BeforeValidator(_lower)
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
            raise _error("needs num_workers > 0 (batches are prefetched by worker processes)", field="prefetch_factor")
        if self.persistent_workers and self.num_workers == 0:
            raise _error("needs num_workers > 0", field="persistent_workers")
        return self


class JobConfig(_Section):
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
            raise _error(
                "given in both output_setup and train_setup with different values: keep one",
                field="train_setup.export_checkpoint",
            )
        setup["export_checkpoint"] = value
        return {**data, "output_setup": out, "train_setup": setup}

    @model_validator(mode="after")
    def _predictions_need_a_test_set(self) -> JobConfig:
        if self.output_setup.get_prediction and not self.data_source.test_file:
            raise _error(
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
            raise _error(problem[1], field=problem[0])
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


#: ``-c -``: the configuration is read from the standard input.
STDIN = "-"


#: The largest configuration accepted, in bytes (a real one is a few KB); ``--set`` values alike.
MAX_CONFIG_BYTES = 1_000_000
#: The deepest nesting of objects and lists accepted (a real configuration nests 4 levels).
MAX_CONFIG_DEPTH = 32


def _too_large(source: str, size: int | str) -> ConfigError:
    return ConfigError(
        f"{source}: {size} bytes, more than the {MAX_CONFIG_BYTES} a configuration may hold; is it the right file?"
    )


def read_config_text(source: str) -> str:
    """The text of the configuration at ``source``: a path, a URL, or ``-`` for the standard input;
    anything larger than :data:`MAX_CONFIG_BYTES` is refused before it is read whole."""
    if source == STDIN:
        import sys

        text = sys.stdin.read(MAX_CONFIG_BYTES + 1)
        if len(text) > MAX_CONFIG_BYTES:
            raise _too_large("-c -", f"more than {MAX_CONFIG_BYTES}")
        if not text.strip():
            raise ConfigError("-c -: the standard input is empty (pipe the JSON configuration into odeon)")
        return text
    size = storage.size(source)
    if size is not None and size > MAX_CONFIG_BYTES:
        raise _too_large(source, size)
    return storage.read_text(source)


def load_config(source: str, overrides: typing.Sequence[str] = ()) -> JobConfig:
    """Read, parse and validate the configuration at ``source``, with ``--set`` ``overrides`` applied."""
    name = "<stdin>" if source == STDIN else source
    data = parse_json(read_config_text(source), name)
    if overrides:
        data = apply_overrides(data, overrides, name)
        name += " with --set"
    return config_from_dict(data, name)


def apply_overrides(data: Any, overrides: typing.Sequence[str], source: str = "config") -> Any:
    """Apply ``section.key=value`` overrides (``--set``) to the parsed JSON, before validation.

    The value is read as JSON when it parses (``5``, ``0.01``, ``true``, ``null``, ``[1, 2]``,
    ``"5"``), else taken as a string (``resnet34``, ``s3://bucket/run``); the schema then checks
    its type, like any other value. Missing sections or objects on the way are created.
    """
    if not isinstance(data, dict):
        return data
    for override in overrides:
        if len(override) > MAX_CONFIG_BYTES:
            raise _too_large(f"--set {quote(override, 60)}", len(override))
        path, sep, raw = override.partition("=")
        keys = path.strip().split(".")
        if not sep or not all(keys):
            raise ConfigError(
                f"--set {quote(override)}: expected KEY=VALUE with a dotted key, such as train_setup.epochs=5"
            )
        try:
            value = parse_json(raw, f"--set {quote(override, 60)}")
        except ConfigError as error:
            if not isinstance(error.__cause__, json.JSONDecodeError):
                raise  # duplicate keys, nesting
            value = raw
        target = data
        for depth, key in enumerate(keys[:-1]):
            child = target.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"--set {quote(override)}: {'.'.join(keys[: depth + 1])} is not an object in {source}"
                )
            target = child
        target[keys[-1]] = value
    return data


def parse_config(text: str, source: str = "config") -> JobConfig:
    return config_from_dict(parse_json(text, source), source)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects whose keys are unique (Python's json keeps the last of two silently)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _depth(data: Any) -> int:
    """How deeply objects and lists nest in ``data`` (walked without recursion)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
    return deepest


def parse_json(text: str, source: str = "config") -> Any:
    """Parse a configuration's JSON: size, nesting and duplicate keys refused with one line each."""
    if len(text) > MAX_CONFIG_BYTES:
        raise _too_large(source, len(text))
    try:
        data = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{source}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from error
    except _DuplicateKey as error:
        raise ConfigError(
            f"{source}: the key {quote(error.key)} appears twice in one object (JSON readers keep "
            "one of them silently): keep one"
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{source}: objects or lists nested too deeply (a configuration nests a few levels)"
        ) from None
    if _depth(data) > MAX_CONFIG_DEPTH:
        raise ConfigError(
            f"{source}: objects or lists nested more than {MAX_CONFIG_DEPTH} levels deep (a "
            "configuration nests a few levels)"
        )
    return data


def upgrade_config(data: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """``data`` (a configuration as JSON, from a file or a checkpoint) in the current version's format.

    Each entry of :data:`UPGRADES` turns version n into n + 1 (renamed keys, moved sections); a
    configuration without ``config_version`` is taken as the current one (the specification's examples
    have none)."""
    version = data.get("config_version", CONFIG_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return data  # the schema reports it
    if version > CONFIG_VERSION:
        raise ConfigError(
            f"{source}: config_version {version} was written by a later version of odeon-job (this one "
            f"reads up to {CONFIG_VERSION}): upgrade odeon-job"
        )
    for step in range(version, CONFIG_VERSION):
        data = UPGRADES[step](dict(data))
    return {**data, "config_version": CONFIG_VERSION} if version != CONFIG_VERSION else data


def config_from_dict(data: Any, source: str = "config") -> JobConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the configuration must be a JSON object, got {type(data).__name__}")
    data = upgrade_config(data, source)
    try:
        return JobConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError("\n".join(f"{source}: {line}" for line in describe_errors(error))) from error


def resolve_run_names(config: JobConfig, now: _dt.datetime | None = None) -> JobConfig:
    """Fill ``name_exp_log`` and ``version_name`` with the start date and time when absent."""
    now = now or _dt.datetime.now()
    output = config.output_setup
    names = {
        "name_exp_log": output.name_exp_log or now.strftime("%Y-%m-%d"),
        "version_name": output.version_name or now.strftime("%H-%M-%S"),
    }
    return config.model_copy(update={"output_setup": output.model_copy(update=names)})


# --- error messages -------------------------------------------------------------------------------


def describe_errors(error: ValidationError) -> list[str]:
    """One line per problem: the JSON path, what is wrong, and a suggestion when one is close."""
    return [_describe(detail) for detail in error.errors(include_url=False)]


def _json_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad dict key: the key itself precedes it
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _describe(detail: Any) -> str:
    loc, kind, message = tuple(detail["loc"]), detail["type"], detail["msg"]
    path = _json_path(loc)
    if kind == "extra_forbidden":
        return f"{path}: unknown key{did_you_mean(str(loc[-1]), _keys_beside(loc))}"
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "literal_error":
        expected = [choice.strip("'") for choice in re.split(r", | or ", detail["ctx"]["expected"])]
        return (
            f"{path}: {quote(detail['input'])} is not one of {', '.join(expected)}"
            f"{did_you_mean(str(detail['input']), expected)}"
        )
    if kind == "odeon":
        field = (detail.get("ctx") or {}).get("field")
        if field:
            path = field if path == "(top level)" else f"{path}.{field}"
        return f"{path}: {message}"
    message = message.removeprefix("Value error, ")
    return f"{path}: {message}, got {_short(detail.get('input'))}"


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool, type(None))) else repr(value)
    return shorten(text, 60)


def _keys_beside(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed where the unknown key ``loc[-1]`` was found."""
    model: type[BaseModel] | None = JobConfig
    for part in loc[:-1]:
        if model is not None and isinstance(part, str) and part in model.model_fields:
            model = _model_in(model.model_fields[part].annotation)
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None
