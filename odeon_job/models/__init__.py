"""Model name (``train_setup.model_name``) → network builder."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from odeon_job.errors import ConfigError
from odeon_job.models.unet import lightunet, unet

ModelBuilder = Callable[[int, int], nn.Module]

MODELS: dict[str, ModelBuilder] = {
    "unet": unet,
    "lightunet": lightunet,
}


def build_model(name: str, in_channels: int, n_classes: int) -> nn.Module:
    """The network ``name`` for ``in_channels`` image bands and ``n_classes`` classes."""
    if name not in MODELS:
        raise ConfigError(f"train_setup.model_name: {name!r} is not supported yet by this version "
                          f"(available: {', '.join(MODELS)})")
    return MODELS[name](in_channels, n_classes)
