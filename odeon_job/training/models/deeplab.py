"""DeepLabV3+ (Chen et al. 2018) with a torchvision MobileNetV2 backbone, as the specification draws it.

The backbone is MobileNetV2's feature extractor up to its 320-channel block (the final 1x1
convolution to 1280 channels is dropped), its first convolution rebuilt for any number of bands, and
its last strides turned into dilations so that it stops at 1/8 (or 1/16) of the input. torchvision's
ASPP (rates 12/24/36 at output stride 8, 6/12/18 at 16) follows; the decoder upsamples it to the
1/4-scale low-level features (24 channels, reduced to 48), fuses both with two 3x3 convolutions and
classifies; the logits are upsampled bilinearly to the input size. Any input size works.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from odeon_job.config import ModelParams
from odeon_job.training.models.blocks import adapt_first_conv

#: Index of the backbone block whose output is the 1/4-scale low-level feature map.
LOW_LEVEL_BLOCK = 3
LOW_LEVEL_CHANNELS = 24
HIGH_LEVEL_CHANNELS = 320
ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}


def dilate(features: nn.Sequential, output_stride: int) -> None:
    """Turn the stride-2 convolutions that would go past ``output_stride`` into stride 1, and dilate
    every later 3x3 convolution (x2 per removed stride) so the receptive field is kept."""
    stride, rate = 1, 1
    for block in features:
        for conv in [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]:
            if conv.stride == (2, 2):
                if stride * 2 > output_stride:
                    conv.stride = (1, 1)
                    conv.dilation = conv.padding = (rate, rate)
                    rate *= 2
                else:
                    stride *= 2
            elif rate > 1:
                conv.dilation = conv.padding = (rate, rate)


class Decoder(nn.Module):
    def __init__(self, n_classes: int, aspp_channels: int = 256, low_channels: int = 48) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(LOW_LEVEL_CHANNELS, low_channels, 1, bias=False),
            nn.BatchNorm2d(low_channels),
            nn.ReLU(inplace=True),
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(aspp_channels + low_channels, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(256, n_classes, 1)

    def forward(self, x: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=low_level.shape[-2:], mode="bilinear", align_corners=True)
        return self.classifier(self.fuse(torch.cat([x, self.reduce(low_level)], dim=1)))


class DeepLabV3Plus(nn.Module):
    def __init__(self, in_channels: int, n_classes: int, output_stride: int = 8) -> None:
        super().__init__()
        features = torchvision.models.mobilenet_v2(weights=None).features[:18]  # never downloads
        first = features[0][0]
        features[0][0] = nn.Conv2d(in_channels, first.out_channels, 3, stride=2, padding=1, bias=False)
        nn.init.kaiming_normal_(features[0][0].weight, mode="fan_out")
        dilate(features, output_stride)
        self.backbone = features
        self.aspp = ASPP(HIGH_LEVEL_CHANNELS, ASPP_RATES[output_stride])
        self.decoder = Decoder(n_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image
        for index, block in enumerate(self.backbone):
            x = block(x)
            if index == LOW_LEVEL_BLOCK:
                low_level = x
        x = self.decoder(self.aspp(x), low_level)
        return F.interpolate(x, size=image.shape[-2:], mode="bilinear", align_corners=True)

    def load_encoder_state_dict(self, state: Mapping[str, torch.Tensor]) -> list[str]:
        """Load a torchvision MobileNetV2 state dict (ImageNet-style) into the backbone, its first
        convolution adapted to the bands; returns the keys it did not use (last conv, classifier)."""
        prefixes = tuple(f"features.{i}." for i in range(len(self.backbone)))
        backbone = {key[len("features.") :]: value for key, value in state.items() if key.startswith(prefixes)}
        first = "0.0.weight"
        if first in backbone:
            backbone[first] = adapt_first_conv(backbone[first], self.backbone[0][0].in_channels)
        self.backbone.load_state_dict(backbone, strict=True)
        return [key for key in state if not key.startswith(prefixes)]


def deeplab(in_channels: int, n_classes: int, params: ModelParams) -> DeepLabV3Plus:
    """The specification's ``deeplab``: DeepLabV3+ on MobileNetV2."""
    return DeepLabV3Plus(in_channels, n_classes, params.output_stride)
