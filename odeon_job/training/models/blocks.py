"""Pieces shared by the networks: double convolutions, any-size inputs, first-layer adaptation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Sequential):
    """(3x3 convolution → [batch norm] → ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for channels in (in_channels, out_channels):
            layers.append(nn.Conv2d(channels, out_channels, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def upsampler(channels: int, upsampling: str, align_corners: bool = False) -> nn.Module:
    """x2 upsampling keeping ``channels``: bilinear, or a 2x2 transposed convolution of stride 2."""
    if upsampling == "bilinear":
        return nn.Upsample(scale_factor=2, mode="bilinear", align_corners=align_corners)
    return nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)


class AnySize(nn.Module):
    """A network whose input sides must be multiples of ``stride``: other sizes are padded (edge pixels
    repeated) on the bottom and right, and the output is cropped back to the input's size."""

    stride: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.stride, -width % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return self.forward_padded(x)[..., :height, :width]

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """An RGB first-layer kernel (out, 3, k, k) for ``in_channels`` bands.

    Three bands keep it as is; otherwise each band gets the mean of the RGB kernels, scaled by
    3 / bands so that the layer's response to an image keeps its magnitude.
    """
    if weight.shape[1] == in_channels:
        return weight
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, 1, 1) * (weight.shape[1] / in_channels)
