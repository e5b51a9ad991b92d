"""U-Net with a torchvision ResNet encoder (18, 34, 50, 101 or 152 layers).

The encoder is torchvision's ResNet with its first convolution rebuilt for any number of bands and
its classifier unused. Five decoder stages go back from 1/32 to full resolution, each upsampling x2
(bilinear or a stride-2 transposed convolution), concatenating the encoder's features of that scale
(stem at 1/2, layer1 at 1/4, layer2 at 1/8, layer3 at 1/16) and applying a double convolution.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torchvision
from torch import nn

from odeon_job.config import ModelParams
from odeon_job.training.models.blocks import AnySize, DoubleConv, adapt_first_conv, upsampler

#: Output channels of the five decoder stages, from 1/16 to full resolution.
DECODER_CHANNELS = (256, 128, 64, 32, 16)


class DecoderStage(nn.Module):
    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, upsampling: str, align_corners: bool = False
    ) -> None:
        super().__init__()
        self.up = upsampler(in_channels, upsampling, align_corners)
        self.conv = DoubleConv(in_channels + skip_channels, out_channels, batch_norm=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        return self.conv(x if skip is None else torch.cat([x, skip], dim=1))


class ResNetUNet(AnySize):
    stride = 32

    def __init__(
        self,
        depth: int,
        in_channels: int,
        n_classes: int,
        upsampling: str = "bilinear",
        decoder_channels: Sequence[int] = DECODER_CHANNELS,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        encoder = getattr(torchvision.models, f"resnet{depth}")(weights=None)  # never downloads
        encoder.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(encoder.conv1.weight, mode="fan_out", nonlinearity="relu")
        encoder.fc = nn.Identity()  # the classifier is not used; Identity keeps no parameters
        self.encoder = encoder
        expansion = type(encoder.layer1[0]).expansion  # 1 for BasicBlock (18, 34), 4 for Bottleneck
        skips = (64 * expansion * 4, 64 * expansion * 2, 64 * expansion, 64, 0)  # layer3, 2, 1, stem, none
        inputs = (64 * expansion * 8, *decoder_channels[:-1])
        self.decoder = nn.ModuleList(
            DecoderStage(c_in, c_skip, c_out, upsampling, align_corners)
            for c_in, c_skip, c_out in zip(inputs, skips, decoder_channels, strict=True)
        )
        self.head = nn.Conv2d(decoder_channels[-1], n_classes, kernel_size=1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        e = self.encoder
        stem = e.relu(e.bn1(e.conv1(x)))
        layer1 = e.layer1(e.maxpool(stem))
        layer2 = e.layer2(layer1)
        layer3 = e.layer3(layer2)
        x = e.layer4(layer3)
        for stage, skip in zip(self.decoder, (layer3, layer2, layer1, stem, None), strict=True):
            x = stage(x, skip)
        return self.head(x)

    def load_encoder_state_dict(self, state: Mapping[str, torch.Tensor]) -> list[str]:
        """Load a torchvision ResNet state dict (ImageNet-style) into the encoder, its first
        convolution adapted to the bands; returns the keys it did not use (the classifier's)."""
        state = dict(state)
        state["conv1.weight"] = adapt_first_conv(state["conv1.weight"], self.encoder.conv1.in_channels)
        unused = [key for key in state if key.startswith("fc.")]
        self.encoder.load_state_dict({k: v for k, v in state.items() if k not in unused}, strict=True)
        return unused


def resnet_unet(depth: int) -> Callable[[int, int, ModelParams], ResNetUNet]:
    """The builder of the U-Net with a ResNet-``depth`` encoder."""

    def build(in_channels: int, n_classes: int, params: ModelParams) -> ResNetUNet:
        return ResNetUNet(depth, in_channels, n_classes, params.upsampling, align_corners=params.align_corners)

    return build
