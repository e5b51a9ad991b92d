"""U-Net (Ronneberger et al. 2015) as the specification describes it: InputConv, four EncoderConv,
four DecoderConv with skip connections, OutputConv. Padded convolutions keep the tile size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from odeon_job.config import ModelParams
from odeon_job.training.models.blocks import AnySize, DoubleConv, upsampler

Upsampling = Literal["bilinear", "transposed"]


class InputConv(DoubleConv):
    """The first block: a double convolution at full resolution."""


class EncoderConv(nn.Sequential):
    """2x2 max-pooling (half the size), then a double convolution."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, batch_norm))


class DecoderConv(nn.Module):
    """Upsample x2 halving the channels, concatenate the encoder's skip, double convolution.

    ``bilinear``: ``nn.Upsample(scale_factor=2)`` then a 1x1 convolution (ODEON's default, which
    interpolates with ``align_corners=True``);
    ``transposed``: a 2x2 transposed convolution with stride 2.
    """

    def __init__(
        self, in_channels: int, out_channels: int, batch_norm: bool, upsampling: Upsampling, align_corners: bool = False
    ) -> None:
        super().__init__()
        if upsampling == "bilinear":
            self.up: nn.Module = nn.Sequential(
                upsampler(in_channels, "bilinear", align_corners),
                nn.Conv2d(in_channels, in_channels // 2, kernel_size=1),
            )
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels // 2 + out_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class OutputConv(nn.Conv2d):
    """A 1x1 convolution to one logit per class."""

    def __init__(self, in_channels: int, n_classes: int) -> None:
        super().__init__(in_channels, n_classes, kernel_size=1)


class UNet(AnySize):
    """A U-Net with ``features`` channels at its five levels; any input size (see :class:`AnySize`)."""

    stride = 16

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        batch_norm: bool = True,
        upsampling: Upsampling = "bilinear",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if len(features) != 5:
            raise ValueError("a U-Net has five levels of features")
        self.inc = InputConv(in_channels, features[0], batch_norm)
        self.downs = nn.ModuleList(
            EncoderConv(a, b, batch_norm) for a, b in zip(features[:-1], features[1:], strict=True)
        )
        self.ups = nn.ModuleList(
            DecoderConv(a, b, batch_norm, upsampling, align_corners)
            for a, b in zip(features[:0:-1], features[-2::-1], strict=True)
        )
        self.outc = OutputConv(features[0], n_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal convolutions, as in the U-Net paper: without batch norm (lightunet), PyTorch's
        default initialisation shrinks the signal layer after layer and training stalls for epochs."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)


def unet(in_channels: int, n_classes: int, params: ModelParams) -> UNet:
    """The specification's ``unet``: 64 to 1024 features, batch norm."""
    return UNet(
        in_channels,
        n_classes,
        (64, 128, 256, 512, 1024),
        batch_norm=True,
        upsampling=params.upsampling,
        align_corners=params.align_corners,
    )


def lightunet(in_channels: int, n_classes: int, params: ModelParams) -> UNet:
    """The specification's ``lightunet``: 8 to 128 features, no batch norm (as its code shows)."""
    return UNet(
        in_channels,
        n_classes,
        (8, 16, 32, 64, 128),
        batch_norm=False,
        upsampling=params.upsampling,
        align_corners=params.align_corners,
    )
