"""Transforms of an (image, mask) pair (augmentations, train split only), and the input scaling.

Images arrive in the files' own units, (bands, H, W): uint8 as read for 0-255 imagery, float32 when
``data_source.image_max_value`` is set. Augmentations keep those units (``rotation`` and
``radiometry`` return float32); masks are integer (H, W) class indices (uint8, or int64 beyond 256
classes), whose type every transform keeps. Scaling to 0-1 and normalising is not done here but by
:class:`InputScaling`, once a batch is on the training device: uint8 tiles are a quarter of the bytes
of float32 ones to pass between DataLoader workers and to copy to a GPU, and the arithmetic is free
there.

Geometric augmentations move image and mask together; radiometric ones touch the image only.
Every random draw comes from the ``generator`` passed in, which the dataset seeds per sample and
epoch: augmentations do not depend on worker processes or on a resume.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from odeon_job.config import DataSource, NormalizationStats, Split

Pair = tuple[torch.Tensor, torch.Tensor]


class PairTransform(Protocol):
    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> Pair: ...


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _chance(p: float, generator: torch.Generator) -> bool:
    return torch.rand((), generator=generator).item() < p


class Rotation90:
    """Rotate by 0, 90, 180 or 270 degrees (0 or 180 only for non-square tiles, to keep their shape)."""

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> Pair:
        square = image.shape[-1] == image.shape[-2]
        k = int(torch.randint(0, 4 if square else 2, (), generator=generator).item()) * (1 if square else 2)
        return torch.rot90(image, k, dims=(-2, -1)), torch.rot90(mask, k, dims=(-2, -1))


class Rotation:
    """Rotate by an angle drawn uniformly in [0, 360) degrees about the tile centre.

    Pixels rotated in from outside the tile are mirrored from inside it (reflection), so every
    mask pixel keeps a real class; the image is interpolated bilinearly, the mask by nearest class.
    """

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> Pair:
        angle = math.radians(_uniform(0.0, 360.0, generator))
        height, width = image.shape[-2:]
        cos, sin = math.cos(angle), math.sin(angle)
        # Output pixel -> input pixel, in grid_sample's normalised coordinates (aspect-corrected).
        theta = torch.tensor([[cos, sin * height / width, 0.0], [-sin * width / height, cos, 0.0]], dtype=torch.float32)
        grid = F.affine_grid(theta[None], [1, 1, height, width], align_corners=False)
        rotated = F.grid_sample(
            image[None].float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )[0]
        rotated_mask = F.grid_sample(
            mask[None, None].float(), grid, mode="nearest", padding_mode="reflection", align_corners=False
        )[0, 0]
        # float32 even for uint8 tiles: bilinear values between two levels are kept, not truncated.
        return rotated, rotated_mask.round().to(mask.dtype)


class Radiometry:
    """Gamma in [0.5, 2.2], hue shift of up to 0.066 either way, Gaussian noise of variance in
    [0.001, 0.01]; each with probability 0.5, on the image only.

    Hue applies to the first three bands, taken as RGB, and is skipped for fewer bands. The effects
    are defined on the 0-1 scale: the image (raw units) is divided by ``scale`` (the raw value of 1.0)
    and multiplied back, as float32.
    """

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> Pair:
        image = (image.float() / self.scale).clamp(0.0, 1.0)
        if _chance(0.5, generator):
            image = TF.adjust_gamma(image, _uniform(0.5, 2.2, generator))
        if image.shape[0] >= 3 and _chance(0.5, generator):
            shift = _uniform(0.0, 0.066, generator) * (1 if _chance(0.5, generator) else -1)
            image = torch.cat([TF.adjust_hue(image[:3], shift), image[3:]])
        if _chance(0.5, generator):
            std = math.sqrt(_uniform(0.001, 0.01, generator))
            noise = torch.randn(image.shape, generator=generator, dtype=image.dtype)
            image = (image + noise * std).clamp(0.0, 1.0)
        return image * self.scale, mask


class InputScaling(torch.nn.Module):
    """Images in raw units → the network's input: ``(x / scale - mean) / std`` per band, as float32.

    ``scale`` is the raw value of 1.0 (255 for uint8 imagery, else ``image_max_value``); without
    statistics, the 0-1 image itself. Applied by the module to whole batches on its device, as one
    multiply-add per band. Its tensors are non-persistent buffers: they follow the module to its
    device but stay out of checkpoints (the configuration in the checkpoint rebuilds them).
    """

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, scale: float, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.scale = scale
        mean_t = torch.tensor(mean if mean is not None else [0.0], dtype=torch.float64)
        std_t = torch.tensor(std if std is not None else [1.0], dtype=torch.float64)
        self.register_buffer("weight", (1.0 / (scale * std_t)).float()[:, None, None], persistent=False)
        self.register_buffer("bias", (-mean_t / std_t).float()[:, None, None], persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(bands, H, W) or (B, bands, H, W) raw images → normalised float32."""
        return torch.addcmul(self.bias, images.float(), self.weight)

    def unit_from_input(self, inputs: torch.Tensor) -> torch.Tensor:
        """The network's input (this scaling's output) → the 0-1 scale, to show what it saw."""
        return (inputs.float() - self.bias) / (self.weight * self.scale)


class Compose:
    def __init__(self, transforms: Sequence[PairTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> Pair:
        for transform in self.transforms:
            image, mask = transform(image, mask, generator)
        return image, mask


AUGMENTATIONS: dict[str, Callable[[float], PairTransform]] = {
    "rotation90": lambda scale: Rotation90(),
    "rotation": lambda scale: Rotation(),
    "radiometry": Radiometry,
}


def normalization_for(split: Split, source: DataSource) -> NormalizationStats | None:
    """The split's own statistics, else the train split's, else none (0-1 scaling only)."""
    weights = source.normalization_weights or {}
    return weights.get(split) or weights.get("train")


def build_transform(split: str, source: DataSource, scale: float) -> Compose:
    """Augmentations of ``split`` in the order listed; ``scale`` is the raw value of 1.0."""
    names = (source.data_augmentation or {}).get("train", []) if split == "train" else []
    return Compose([AUGMENTATIONS[name](scale) for name in names])


def scaling_arguments(split: Split, source: DataSource, scale: float) -> dict[str, Any]:
    """:class:`InputScaling`'s arguments for ``split`` as plain values (a checkpoint keeps them)."""
    stats = normalization_for(split, source)
    return {"scale": scale, "mean": stats.mean if stats else None, "std": stats.std if stats else None}
