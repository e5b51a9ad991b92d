"""``odeon predict``'s configuration: the model, the images, where the maps go, and how to read and run. The same keys
as its command-line options, from a JSON file (a ConfigMap, a URL) or the options themselves, ``--set`` applying to
either."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from odeon_job.config.job_config import DeviceSetup
from odeon_job.config.values import MAX_ITEM_SIDE, Section, odeon_error

OutputType = Literal["class", "float32", "uint8", "bit"]


class PredictConfig(Section):
    """What ``odeon predict`` applies to what, and where it writes."""

    model: str = Field(
        description="A run folder (its best val_loss checkpoint), a .ckpt, a .pth beside its run's config.json, or "
        "an MLflow model URI (models:/NAME/VERSION, models:/NAME@ALIAS, runs:/ID/model)."
    )
    images: str = Field(
        description="A CSV of one image per row (optional col_off,row_off,width,height), a folder, a glob, or an "
        "s3:// prefix or glob; local, s3:// or https://."
    )
    output: str = Field(description="The folder the maps go to (local or s3://), one file per image.")
    output_type: OutputType = Field(
        "class",
        description="class (one band of class indices, coloured and named), float32 or uint8 (a probability band "
        "per class), or bit (one 1-bit band per class).",
    )
    patch_size: int | None = Field(
        None,
        ge=8,
        le=MAX_ITEM_SIDE,
        description="Windows of patch_size pixels; the model's training patch size when absent, else 512.",
    )
    overlap: int = Field(0, ge=0, description="Pixels shared by neighbouring windows (their predictions averaged).")
    batch_size: int = Field(8, ge=1, description="Windows per batch.")
    progress_every: float = Field(30.0, gt=0, description="Seconds between progress lines.")
    device_setup: DeviceSetup = Field(default_factory=DeviceSetup, description="Devices and processes, as training.")

    @model_validator(mode="after")
    def _overlap_below_patch(self) -> PredictConfig:
        if self.patch_size is not None and self.overlap >= self.patch_size:
            raise odeon_error(
                f"{self.overlap} pixels, but windows are {self.patch_size} wide: the overlap must be smaller",
                field="overlap",
            )
        return self
