"""Model name (``train_setup.model_name``) → network builder."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from odeon_job.config import ModelParams
from odeon_job.training.models.deeplab import deeplab
from odeon_job.training.models.resnet_unet import resnet_unet
from odeon_job.training.models.unet import lightunet, unet

ModelBuilder = Callable[[int, int, ModelParams], nn.Module]

MODELS: dict[str, ModelBuilder] = {
    "unet": unet,
    "lightunet": lightunet,
    "resnet18": resnet_unet(18),
    "resnet34": resnet_unet(34),
    "resnet50": resnet_unet(50),
    "resnet101": resnet_unet(101),
    "resnet152": resnet_unet(152),
    "deeplab": deeplab,
}


def build_model(name: str, in_channels: int, n_classes: int, params: ModelParams | None = None) -> nn.Module:
    """The network ``name`` for ``in_channels`` image bands and ``n_classes`` classes."""
    return MODELS[name](in_channels, n_classes, params or ModelParams())
