"""Transforms of an (image, mask) pair: augmentations (train split only) and normalisation.

Images arrive as float tensors (bands, H, W) scaled to 0-1, masks as integer (H, W) class indices
(uint8, or int64 beyond 256 classes), whose type every transform keeps.
Geometric augmentations move image and mask together; radiometric ones touch the image only.
Every random draw comes from the ``generator`` passed in, which the dataset seeds per sample and
epoch: augmentations do not depend on worker processes or on a resume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from odeon_job.config import DataSource, NormalizationStats

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
        theta = torch.tensor([[cos, sin * height / width, 0.0], [-sin * width / height, cos, 0.0]],
                             dtype=torch.float32)
        grid = F.affine_grid(theta[None], [1, 1, height, width], align_corners=False)
        rotated = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="reflection",
                                align_corners=False)[0]
        rotated_mask = F.grid_sample(mask[None, None].float(), grid, mode="nearest", padding_mode="reflection",
                                     align_corners=False)[0, 0]
        return rotated.to(image.dtype), rotated_mask.round().to(mask.dtype)


class Radiometry:
    """Gamma in [0.5, 2.2], hue shift of up to 0.066 either way, Gaussian noise of variance in
    [0.001, 0.01]; each with probability 0.5, on the image only.

    Hue applies to the first three bands, taken as RGB, and is skipped for fewer bands.
    """

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> Pair:
        image = image.clamp(0.0, 1.0)
        if _chance(0.5, generator):
            image = TF.adjust_gamma(image, _uniform(0.5, 2.2, generator))
        if image.shape[0] >= 3 and _chance(0.5, generator):
            shift = _uniform(0.0, 0.066, generator) * (1 if _chance(0.5, generator) else -1)
            image = torch.cat([TF.adjust_hue(image[:3], shift), image[3:]])
        if _chance(0.5, generator):
            std = math.sqrt(_uniform(0.001, 0.01, generator))
            noise = torch.randn(image.shape, generator=generator, dtype=image.dtype)
            image = (image + noise * std).clamp(0.0, 1.0)
        return image, mask


class Normalize:
    """``(x - mean) / std`` per band, x being the image scaled to 0-1."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> Pair:
        return image.sub(self.mean).div_(self.std), mask

    def undo(self, image: torch.Tensor) -> torch.Tensor:
        """Back to the 0-1 scale: ``x * std + mean``, for (bands, H, W) or (B, bands, H, W) images."""
        return image * self.std.to(image.device) + self.mean.to(image.device)


class Compose:
    def __init__(self, transforms: Sequence[PairTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> Pair:
        for transform in self.transforms:
            image, mask = transform(image, mask, generator)
        return image, mask

    @property
    def normalization(self) -> Normalize | None:
        """The normalisation step, to undo it when showing images."""
        return next((t for t in self.transforms if isinstance(t, Normalize)), None)


AUGMENTATIONS: dict[str, type[PairTransform]] = {
    "rotation90": Rotation90,
    "rotation": Rotation,
    "radiometry": Radiometry,
}


def normalization_for(split: str, source: DataSource) -> NormalizationStats | None:
    """The split's own statistics, else the train split's, else none (0-1 scaling only)."""
    weights = source.normalization_weights or {}
    return weights.get(split) or weights.get("train")  # type: ignore[call-overload]


def build_transform(split: str, source: DataSource) -> Compose:
    """Augmentations of ``split`` in the order listed, then normalisation."""
    names = (source.data_augmentation or {}).get(split, []) if split == "train" else []  # type: ignore[call-overload]
    transforms: list[PairTransform] = [AUGMENTATIONS[name]() for name in names]
    stats = normalization_for(split, source)
    if stats is not None:
        transforms.append(Normalize(stats.mean, stats.std))
    return Compose(transforms)
