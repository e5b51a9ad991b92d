"""ODEON's layer names (IGN's ODEON, branch ``lightning_multi_gpus``, 2022) and ours, tensor by tensor.

ODEON's ``unet`` and ``lightunet`` are the same networks as ours, layer for layer; only the module
names differ (``inc.double_conv.double_conv.0.weight`` here is ``inc.0.weight``). Every name is
translated by rule, never matched by position, and a state dict is recognised as ODEON's by names
only ODEON writes. Its ``resnet*`` U-Nets share the torchvision encoder with ours (their decoders
differ); its ``deeplab`` has the same tensors as ours under other names but runs them differently
(see :data:`DEEPLAB_NOTE`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

DEEPLAB_NOTE = (
    "ODEON's deeplab runs MobileNetV2 at output stride 32 and takes its low-level features after "
    "block 2; ours dilates the backbone to model_params.output_stride and takes block 3: the weights "
    "load as a starting point to fine-tune, not as ODEON's predictions"
)


def _unet_name(ours: str) -> str | None:
    """ODEON's name for one tensor of our U-Net (``unet``, ``lightunet``); None for none."""
    rules: list[tuple[str, Callable[[re.Match[str]], str]]] = [
        (r"inc\.(\d+)\.(.+)", lambda m: f"inc.double_conv.double_conv.{m[1]}.{m[2]}"),
        (r"downs\.(\d+)\.1\.(\d+)\.(.+)", lambda m: f"down{int(m[1]) + 1}.maxpool_conv.1.double_conv.{m[2]}.{m[3]}"),
        (r"ups\.(\d+)\.up\.1\.(weight|bias)", lambda m: f"up{int(m[1]) + 1}.up.{m[2]}"),  # bilinear, then 1x1
        (r"ups\.(\d+)\.up\.(weight|bias)", lambda m: f"up{int(m[1]) + 1}.up.{m[2]}"),  # transposed
        (r"ups\.(\d+)\.conv\.(\d+)\.(.+)", lambda m: f"up{int(m[1]) + 1}.conv.double_conv.{m[2]}.{m[3]}"),
        (r"outc\.(weight|bias)", lambda m: f"outc.conv.{m[1]}"),
    ]
    for pattern, name in rules:
        match = re.fullmatch(pattern, ours)
        if match:
            return name(match)
    return None


_DEEPLAB_DECODER = {
    "decoder.conv1": "decoder.reduce.0",
    "decoder.bn1": "decoder.reduce.1",
    "decoder.last_conv.0": "decoder.fuse.0",
    "decoder.last_conv.1": "decoder.fuse.1",
    "decoder.last_conv.4": "decoder.fuse.3",
    "decoder.last_conv.5": "decoder.fuse.4",
    "decoder.last_conv.8": "decoder.classifier",
}


def _deeplab_name(odeon: str) -> str | None:
    """Our name for one tensor of ODEON's ``deeplab``; None for the ones we have no place for."""
    match = re.fullmatch(r"backbone\.features\.(\d+)\.(.+)", odeon)
    if match:
        return f"backbone.{match[1]}.{match[2]}"
    if odeon.startswith("aspp."):  # torchvision's ASPP in both
        return odeon
    module, _, leaf = odeon.rpartition(".")
    return f"{_DEEPLAB_DECODER[module]}.{leaf}" if module in _DEEPLAB_DECODER else None


class MalformedWeights(ValueError):
    """A state dict with ODEON's names whose tensors cannot be ODEON's (a scalar for a convolution's weights, a
    decoder without its upsampling): the message says which."""


def odeon_architecture(state: Mapping[str, torch.Tensor]) -> str | None:
    """Which of ODEON's networks ``state`` comes from (``unet``, ``lightunet``, ``resnet``, ``deeplab``),
    from names only ODEON writes; None when it is not ODEON's. Raises :class:`MalformedWeights`."""
    first = state.get("inc.double_conv.double_conv.0.weight")
    if first is not None:
        if first.ndim != 4:
            raise MalformedWeights(
                f"inc.double_conv.double_conv.0.weight (the first convolution of ODEON's U-Nets) "
                f"has shape {list(first.shape)}, not a convolution's (out, in, height, width)"
            )
        odeon_unet_upsampling(state)
        return "lightunet" if first.shape[0] == 8 else "unet" if first.shape[0] == 64 else "unet-like"
    if "encoder.conv1.weight" in state and any(k.startswith(("center.block.", "dec5.")) for k in state):
        return "resnet"
    if "backbone.features.0.0.weight" in state and any(k.startswith("decoder.last_conv.") for k in state):
        return "deeplab"
    return None


def odeon_unet_upsampling(state: Mapping[str, torch.Tensor]) -> str:
    """ODEON's U-Net decoders: a 1x1 convolution after bilinear upsampling (its default), or a 2x2
    transposed convolution (its ``deterministic`` mode), told apart by the kernel's size."""
    kernel = state.get("up1.up.weight")
    if kernel is None or kernel.ndim != 4:
        raise MalformedWeights(
            "up1.up.weight (the first decoder step's upsampling of ODEON's U-Nets) is "
            + ("missing" if kernel is None else f"of shape {list(kernel.shape)}, not a convolution's")
        )
    return "transposed" if kernel.shape[-1] == 2 else "bilinear"


@dataclass
class Translation:
    """A state dict under our names, and what of the source had no place."""

    state: dict[str, torch.Tensor]
    unused: list[str] = field(default_factory=list)
    note: str | None = None


def from_odeon(state: Mapping[str, torch.Tensor], architecture: str, own_names: list[str]) -> Translation:
    """ODEON's tensors under our names for a model whose state dict has ``own_names``."""
    if architecture in ("unet", "lightunet", "unet-like"):
        names = {odeon: ours for ours in own_names if (odeon := _unet_name(ours)) is not None}
        mapped = {names[k]: v for k, v in state.items() if k in names}
        return Translation(mapped, [k for k in state if k not in names])
    if architecture == "resnet":
        # Both keep torchvision's ResNet as ``encoder``; ODEON's conv1..conv5 are aliases of its parts.
        encoder = {k: v for k, v in state.items() if k.startswith("encoder.") and not k.startswith("encoder.fc.")}
        return Translation(
            encoder,
            [k for k in state if k not in encoder and not _alias_of_encoder(k)],
            note="ODEON's resnet decoder (center, dec5..dec0, final) has another structure: left as initialised",
        )
    translated = {k: _deeplab_name(k) for k in state}
    mapped = {ours: state[k] for k, ours in translated.items() if ours is not None}
    unused = [k for k, ours in translated.items() if ours is None and not k.startswith("backbone.low_features.")]
    return Translation(mapped, unused, note=DEEPLAB_NOTE)


def _alias_of_encoder(name: str) -> bool:
    """ODEON's UNetResNet registers the encoder's parts twice (``conv1`` = conv1, bn1; ``conv2`` = layer1...)."""
    return re.match(r"conv[1-5]\.", name) is not None


def to_odeon(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our U-Net's state dict under ODEON's names, for ODEON's ``load_state_dict(strict=True)``."""
    renamed = {}
    for ours, tensor in state.items():
        odeon = _unet_name(ours)
        if odeon is None:
            raise ValueError(f"{ours} has no name in ODEON's U-Net")
        renamed[odeon] = tensor
    return renamed
