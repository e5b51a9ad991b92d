"""Stand-ins for IGN ODEON's networks (branch ``lightning_multi_gpus``), written from their documented
structure for the compatibility tests: the same module names, shapes and forward pass, so a state dict
that loads here with ``strict=True`` loads in ODEON. Not ODEON's code.

ODEON's U-Net: ``inc`` (a double convolution), ``down1``..``down4`` (max-pooling, double convolution, in
``maxpool_conv``), ``up1``..``up4`` (``up``: bilinear x2 with ``align_corners=True`` then a 1x1
convolution, or a 2x2 transposed convolution; ``conv``: a double convolution of the skip and the
upsampled map, in that order), ``outc.conv`` (1x1). Double convolutions live in ``double_conv``
(conv, [batch norm], ReLU, twice); ``inc`` wraps one more level (``inc.double_conv.double_conv``).
``unet``: 64..1024 features with batch norm; ``lightunet``: 8..128 without.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class RefDoubleConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, batch_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for channels in (c_in, c_out):
            layers += [nn.Conv2d(channels, c_out, 3, padding=1)]
            layers += [nn.BatchNorm2d(c_out)] if batch_norm else []
            layers += [nn.ReLU(inplace=True)]
        self.double_conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class RefInput(nn.Module):
    def __init__(self, c_in: int, c_out: int, batch_norm: bool) -> None:
        super().__init__()
        self.double_conv = RefDoubleConv(c_in, c_out, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class RefDown(nn.Module):
    def __init__(self, c_in: int, c_out: int, batch_norm: bool) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), RefDoubleConv(c_in, c_out, batch_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class RefUp(nn.Module):
    def __init__(self, c_in: int, c_out: int, bilinear: bool, batch_norm: bool) -> None:
        super().__init__()
        self.bilinear = bilinear
        self.up = nn.Conv2d(c_in, c_in // 2, 1) if bilinear else nn.ConvTranspose2d(c_in, c_in // 2, 2, stride=2)
        self.conv = RefDoubleConv(c_in, c_out, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.bilinear:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class RefOutput(nn.Module):
    def __init__(self, c_in: int, n_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class RefUNet(nn.Module):
    def __init__(
        self, n_channels: int, n_classes: int, features: Sequence[int], batch_norm: bool, bilinear: bool = True
    ) -> None:
        super().__init__()
        self.inc = RefInput(n_channels, features[0], batch_norm)
        for i in range(4):
            setattr(self, f"down{i + 1}", RefDown(features[i], features[i + 1], batch_norm))
            setattr(self, f"up{i + 1}", RefUp(features[4 - i], features[3 - i], bilinear, batch_norm))
        self.outc = RefOutput(features[0], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for i in range(1, 5):
            skips.append(getattr(self, f"down{i}")(skips[-1]))
        x = skips.pop()
        for i in range(1, 5):
            x = getattr(self, f"up{i}")(x, skips.pop())
        return self.outc(x)


def ref_unet(n_channels: int, n_classes: int, bilinear: bool = True) -> RefUNet:
    return RefUNet(n_channels, n_classes, (64, 128, 256, 512, 1024), batch_norm=True, bilinear=bilinear)


def ref_lightunet(n_channels: int, n_classes: int, bilinear: bool = True) -> RefUNet:
    return RefUNet(n_channels, n_classes, (8, 16, 32, 64, 128), batch_norm=False, bilinear=bilinear)


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with every parameter and batch-norm statistic drawn at random (a "trained" model)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            values = torch.randn(tensor.shape, generator=generator) * 0.2
            tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return model.eval()


def odeon_checkpoint(model: nn.Module, model_name: str, n_channels: int, class_labels: list[str]) -> dict:
    """A checkpoint as ODEON's SegmentationTask saves it: the network under ``model.``, its hyperparameters."""
    return {
        "epoch": 3,
        "global_step": 12,
        "pytorch-lightning_version": "1.6.4",
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {
            "model_name": model_name,
            "num_classes": len(class_labels),
            "num_channels": n_channels,
            "class_labels": class_labels,
            "criterion_name": "ce",
            "learning_rate": 0.01,
            "optimizer_config": None,
            "scheduler_config": None,
            "patience": 30,
            "load_pretrained_weights": None,
            "init_model_weights": None,
            "loss_classes_weights": [1] * len(class_labels),
        },
    }
