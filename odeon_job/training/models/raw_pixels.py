"""The network as a model of raw pixels, for MLflow: a user of the logged model gives tiles as they are in
the GeoTIFFs (uint8, uint16...) and gets the per-class probabilities ``odeon`` computed for them.

The bare network needs its input scaled and normalised with statistics that live in the LightningModule;
this module carries them (the run's test-split scaling) and the output activation of the run's loss.
"""

from __future__ import annotations

import torch
from torch import nn

from odeon_job.data.transforms import InputScaling


class RawPixelModel(nn.Module):
    """``network(scaling(raw))``, then softmax (``ce``, ``focal``) or a sigmoid per class (``bce``, ``combo``)."""

    def __init__(self, network: nn.Module, scaling: InputScaling, softmax: bool) -> None:
        super().__init__()
        self.scaling = scaling
        self.network = network
        self.softmax = softmax

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, bands, H, W) raw tiles, any numeric type → (B, classes, H, W) float32 probabilities."""
        logits = self.network(self.scaling(raw))
        return logits.softmax(dim=1) if self.softmax else logits.sigmoid()
