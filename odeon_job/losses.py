"""Loss name (``train_setup.loss``) → loss module taking (logits (B, C, H, W), class indices (B, H, W))."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from odeon_job.errors import ConfigError

SUPPORTED = ("ce",)


def build_loss(name: str, class_weights: Sequence[float] | None = None) -> nn.Module:
    """``ce``: cross-entropy on class indices, ``class_weights`` (``class_imbalance``) weighting classes."""
    if name == "ce":
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        return nn.CrossEntropyLoss(weight=weight)
    raise ConfigError(f"train_setup.loss: {name!r} is not supported yet by this version "
                      f"(available: {', '.join(SUPPORTED)})")
