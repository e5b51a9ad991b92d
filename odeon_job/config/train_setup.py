"""``train_setup``: the model, its loss, optimizer, scheduler, early stopping and the training's options."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from odeon_job.config import catalog
from odeon_job.config.values import (
    MONITOR_MODES,
    LossName,
    ModelName,
    Monitor,
    OptimizerName,
    Precision,
    SchedulerName,
    Section,
    lowercase,
    odeon_error,
    one_or_list,
)
from odeon_job.errors import quote

#: The specification's default learning-rate scheduler (also the defaults of its keys when named).
REDUCE_LR_ON_PLATEAU_DEFAULTS: dict[str, Any] = {
    "mode": "min",
    "factor": 0.5,
    "patience": 10,
    "min_lr": 1e-7,
    "cooldown": 4,
}


def _model_name(value: Any) -> Any:
    value = lowercase(value)
    if value == "resnet150":
        raise odeon_error("'resnet150' is a slip in the specification: the ResNet with 152 layers is 'resnet152'")
    return value


def _precision(value: Any) -> Any:
    """Lightning's spellings of full precision (32, "32-true") are the same "32"."""
    return "32" if value in (32, "32-true") else value


def _val_check_interval(value: Any) -> Any:
    """A float fraction of the epoch in (0, 1], or an int number of training batches (>= 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise odeon_error(
            f"expected a fraction of an epoch (0 < float <= 1.0) or a number of batches (int >= 1), got {quote(value)}"
        )
    if isinstance(value, int) and value < 1:
        raise odeon_error(f"a number of batches must be >= 1, got {value}")
    if isinstance(value, float) and not 0.0 < value <= 1.0:
        raise odeon_error(f"a fraction of an epoch must be in (0, 1], got {value}")
    return value


class OptimizerConfig(BaseModel):
    """``optimizer`` names the optimizer; every other key is passed to its constructor."""

    model_config = ConfigDict(extra="allow")

    optimizer: Annotated[OptimizerName, BeforeValidator(lowercase)] = Field(
        "adam", description=f"{catalog.spoken(catalog.OPTIMIZERS)}; other keys are its arguments."
    )

    @model_validator(mode="after")
    def _lr_is_a_rate(self) -> OptimizerConfig:
        lr = (self.model_extra or {}).get("lr")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
            raise odeon_error(f"a learning rate is a positive number, got {quote(lr)}", field="lr")
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

    scheduler: Annotated[SchedulerName, BeforeValidator(lowercase)] = Field(
        "reducelronplateau", description=f"{catalog.spoken(catalog.SCHEDULERS)}; other keys are its arguments."
    )

    @model_validator(mode="before")
    @classmethod
    def _plateau_defaults(cls, data: Any) -> Any:
        """Keys of ReduceLROnPlateau that the user leaves out take the specification's defaults."""
        if isinstance(data, dict) and lowercase(data.get("scheduler", "reducelronplateau")) == "reducelronplateau":
            return {**REDUCE_LR_ON_PLATEAU_DEFAULTS, **data}
        return data

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EarlyStopping(Section):
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
            raise odeon_error(
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


class ModelParams(Section):
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
            raise odeon_error('applies to bilinear upsampling, but upsampling is "transposed"', field="align_corners")
        return self


class LossParams(Section):
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


class TrainSetup(Section):
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
        description='Extension: "imagenet" (torchvision\'s ImageNet weights of the encoder, from the file torchvision '
        "keeps under TORCH_HOME: never downloaded), or the path or URL of a torchvision ImageNet-style state dict, "
        "for a resnet or deeplab encoder.",
    )
    epochs: int = Field(1000, ge=1, description="Number of training epochs.")
    batch_size: int = Field(3, ge=1, description="Samples per mini-batch (per process).")
    lr: float = Field(0.001, gt=0, description="Starting learning rate.")
    loss: Annotated[LossName, BeforeValidator(lowercase)] = Field(
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
    export_checkpoint: Annotated[list[Literal[".pth", "odeon_pth"]] | None, BeforeValidator(one_or_list)] = Field(
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
        values = one_or_list(value)
        if not isinstance(values, list):
            return values  # (the schema then names the wrong type)
        return (
            [v if not isinstance(v, str) or v.startswith(".") or v == "odeon_pth" else "." + v for v in values]
            if values
            else values
        )

    @model_validator(mode="after")
    def _options_fit_model_and_loss(self) -> TrainSetup:
        if self.class_imbalance is not None and not catalog.LOSSES[self.loss].class_weights:
            weighted = [name for name, loss in catalog.LOSSES.items() if loss.class_weights]
            raise odeon_error(
                f"weights the {catalog.spoken(weighted)} loss only, but loss is {self.loss!r}", field="class_imbalance"
            )
        # A value other than the default for a model or loss that does not use it is a mistake (a default
        # is fine: resolved configs, such as the saved config.json, carry every key).
        for key in _changed(self.model_params):
            if self.model_name not in _MODEL_PARAM_USERS[key]:
                raise odeon_error(
                    f"applies to {', '.join(_MODEL_PARAM_USERS[key])}, not {self.model_name}",
                    field=f"model_params.{key}",
                )
        for key in _changed(self.loss_params):
            if self.loss not in _LOSS_PARAM_USERS[key]:
                raise odeon_error(
                    f"applies to the {_LOSS_PARAM_USERS[key][0]} loss, not {self.loss}", field=f"loss_params.{key}"
                )
        if self.model_name == "deeplab" and self.batch_size < 2:
            raise odeon_error(
                "deeplab needs at least 2 samples per batch (the image-pooling branch of its ASPP has batch norm)",
                field="batch_size",
            )
        if "odeon_pth" in (self.export_checkpoint or []) and self.model_name not in ODEON_U_NETS:
            raise odeon_error(
                f'"odeon_pth" writes ODEON\'s U-Net layer names: {catalog.spoken(ODEON_U_NETS)} only, '
                f"not {self.model_name}",
                field="export_checkpoint",
            )
        if self.encoder_weights is not None and self.model_name not in PRETRAINABLE_ENCODERS:
            raise odeon_error(
                f"{self.model_name} has no pretrainable encoder (resnet* and deeplab do); use "
                "init_weights for weights of the whole model",
                field="encoder_weights",
            )
        return self
