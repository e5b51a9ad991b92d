"""Pictures of a model's behaviour, as (3, H, W) float tensors in 0-1: the confusion matrix and
validation tiles beside their truth and prediction. TensorBoard and MLflow show the same ones."""

from __future__ import annotations

import colorsys
from typing import TYPE_CHECKING

import torch

from odeon_job.data.masks import as_long_classes
from odeon_job.metrics import row_normalised

if TYPE_CHECKING:
    from odeon_job.data.dataset import SegmentationDataset
    from odeon_job.module import SegmentationModule


def palette(n: int) -> torch.Tensor:
    """``n`` well separated RGB colours (0-1), the same for the same ``n``."""
    hues = [(0.05 + i * 0.618034) % 1.0 for i in range(n)]
    return torch.tensor([colorsys.hsv_to_rgb(h, 0.75 if i % 2 else 0.95, 0.95 if i % 2 else 0.7)
                         for i, h in enumerate(hues)], dtype=torch.float32)


def colour(classes: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """(H, W) class indices (or the workers' uint8 masks) → (3, H, W) image; ignored pixels are black."""
    with_black = torch.cat([colours, torch.zeros(1, 3)])  # IGNORE_INDEX (-1) picks the last row
    return with_black[as_long_classes(classes.cpu())].permute(2, 0, 1)


def confusion_image(confusion: torch.Tensor, cell: int = 0) -> torch.Tensor:
    """(3, H, W) image of the row-normalised matrix: white (0) to dark blue (1), rows = truth."""
    fractions = torch.tensor(row_normalised(confusion), dtype=torch.float32)
    cell = cell or max(4, 256 // fractions.shape[0])
    dark = torch.tensor([0.03, 0.19, 0.42])[:, None, None]
    image = 1 - fractions[None] * (1 - dark)
    return image.repeat_interleave(cell, dim=1).repeat_interleave(cell, dim=2)


def confusion_table(confusion: torch.Tensor, labels: tuple[str, ...]) -> str:
    header = "| truth \\ prediction | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels) + "\n"
    rows = [f"| {label} | " + " | ".join(str(int(v)) for v in row) + " |" for label, row in zip(labels, confusion,
                                                                                                  strict=True)]
    return header + "\n".join(rows)


def sample_rows(module: SegmentationModule, dataset: SegmentationDataset, count: int) -> list[torch.Tensor]:
    """The first ``count`` tiles of ``dataset``, each as input (first three bands, on the 0-1 scale) | truth |
    prediction, in class colours."""
    items = [dataset[index] for index in range(min(count, len(dataset)))]
    if not items:
        return []
    images = torch.stack([item["image"] for item in items])
    was_training = module.training
    module.eval()
    with torch.no_grad():
        predicted = module(module.scale_images(images, dataset.split)).argmax(dim=1).cpu()
    module.train(was_training)
    shown = module.input_scaling(dataset.split).to_unit(images)
    shown = shown[:, :3] if shown.shape[1] >= 3 else shown[:, :1].repeat(1, 3, 1, 1)
    colours = palette(module.n_classes)
    return [torch.cat([image.clamp(0, 1), colour(item["mask"], colours), colour(prediction, colours)], dim=2)
            for image, item, prediction in zip(shown, items, predicted, strict=True)]


def png_bytes(image: torch.Tensor) -> bytes:
    """A (3, H, W) 0-1 image as PNG (with Pillow, which torchvision depends on)."""
    import io

    from PIL import Image

    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
