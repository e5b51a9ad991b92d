"""Pictures of a model's behaviour, drawn with matplotlib to be read: the confusion matrix, sample tiles
beside their truth and prediction, per-class IoU, and the training curves. Each is returned as an
(H, W, 3) uint8 array (TensorBoard's ``add_image(..., dataformats="HWC")``) or PNG bytes (MLflow);
TensorBoard and MLflow show the same ones.

The sample tiles come from the validation and test batches as they pass on the device (the module keeps
the first few, see :class:`ShownTile`): drawing never reads a GeoTIFF nor runs the network again.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from odeon_job.config.colors import rgb
from odeon_job.training.metrics import row_normalised

#: Sample tiles shown per validation (and test).
SAMPLE_TILES = 4


@dataclass
class ShownTile:
    """One tile as the network saw it: ``image`` (3, H, W) on the 0-1 scale (the first three bands, or the
    first band three times), ``truth`` and ``prediction`` (H, W) class indices (ignored pixels -1)."""

    image: torch.Tensor
    truth: torch.Tensor
    prediction: torch.Tensor


def palette(colors: Sequence[str]) -> np.ndarray:
    """The classes' "#rrggbb" colours (the model's) as (n, 3) RGB, 0-1: a class has the colour of its maps."""
    return np.array([rgb(color) for color in colors], dtype=np.float32) / 255


def coloured(classes: torch.Tensor, colours: np.ndarray) -> np.ndarray:
    """(H, W) class indices → (H, W, 3) image; ignored pixels (negative) are black."""
    with_black = np.concatenate([colours, np.zeros((1, 3), dtype=np.float32)])
    indices = classes.cpu().numpy().astype(np.int64)
    return with_black[np.where(indices < 0, len(colours), indices)]


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def to_array(figure: Any) -> np.ndarray:
    """The figure's pixels, (H, W, 3) uint8."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def png_bytes(image: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 image as PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _title(what: str, split: str, epoch: int | None, miou: float | None = None) -> str:
    parts = [f"{what}, {split}"] + ([f"epoch {epoch}"] if epoch is not None else [])
    return " · ".join(parts + ([f"mIoU {miou:.3f}"] if miou is not None else []))


def confusion_figure(
    confusion: torch.Tensor, labels: Sequence[str], split: str, epoch: int | None, miou: float | None
) -> np.ndarray:
    """Rows = truth, columns = prediction; colour = the share of the row (recall on the diagonal), each cell
    written as a percentage of its row; class names on both axes. Readable from 2 to 20 classes."""
    fractions = np.array(row_normalised(confusion))
    n = len(labels)
    side = min(14.0, 4.0 + 0.5 * n)
    figure = _new_figure(side + 1.5, side)
    axes = figure.add_subplot()
    shown = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(n), labels, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center")
    axes.set_yticks(range(n), labels)
    axes.set_xlabel("prediction")
    axes.set_ylabel("truth")
    font = 10 if n <= 8 else 8 if n <= 14 else 6
    rows = confusion.sum(dim=1)
    for row in range(n):
        for column in range(n):
            value = fractions[row, column]
            text = f"{value:.0%}" if rows[row] > 0 else "–"
            axes.text(
                column, row, text, ha="center", va="center", fontsize=font, color="white" if value > 0.55 else "black"
            )
    figure.colorbar(shown, ax=axes, fraction=0.046, label="share of the true class's pixels")
    axes.set_title(_title("Confusion matrix", split, epoch, miou))
    return to_array(figure)


def confusion_table(confusion: torch.Tensor, labels: Sequence[str]) -> str:
    """The pixel counts as a Markdown table (TensorBoard's text tab: the numbers behind the colours)."""
    header = "| truth \\ prediction | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels) + "\n"
    rows = [
        f"| {label} | " + " | ".join(str(int(v)) for v in row) + " |"
        for label, row in zip(labels, confusion, strict=True)
    ]
    return header + "\n".join(rows)


def samples_figure(
    samples: Sequence[ShownTile], labels: Sequence[str], colors: Sequence[str], split: str, epoch: int | None
) -> np.ndarray:
    """One row per tile: input | truth | prediction, with one legend of the class colours."""
    colours = palette(colors)
    figure = _new_figure(9.0, 0.6 + 2.7 * len(samples))
    grid = figure.subplots(len(samples), 3, squeeze=False)
    for row, sample in enumerate(samples):
        panels = (
            sample.image.permute(1, 2, 0).clamp(0, 1).cpu().numpy(),
            coloured(sample.truth, colours),
            coloured(sample.prediction, colours),
        )
        for column, (axes, pixels) in enumerate(zip(grid[row], panels, strict=True)):
            axes.imshow(pixels, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title(("input", "truth", "prediction")[column])
    from matplotlib.patches import Patch

    handles = [Patch(color=colours[i], label=label) for i, label in enumerate(labels)]
    handles.append(Patch(color="black", label="ignored"))
    figure.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)), fontsize=8)
    figure.suptitle(_title("Sample tiles", split, epoch))
    return to_array(figure)


def iou_figure(
    metrics: Mapping[str, float | None], labels: Sequence[str], colors: Sequence[str], split: str, epoch: int | None
) -> np.ndarray:
    """Per-class IoU bars in the classes' colours, classes absent from truth and prediction marked as such, the mean
    as a line."""
    values = [metrics.get(f"{label}/IoU") for label in labels]
    figure = _new_figure(max(5.0, 1.0 + 0.45 * len(labels)), 4.0)
    axes = figure.add_subplot()
    colours = palette(colors)
    axes.bar(range(len(labels)), [v or 0.0 for v in values], color=colours)
    for index, value in enumerate(values):
        axes.text(
            index,
            (value or 0.0) + 0.01,
            "absent" if value is None else f"{value:.2f}",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    mean = metrics.get("Average/IoU")
    if mean is not None:
        axes.axhline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.3f}")
        axes.legend(loc="upper right", fontsize=8)
    axes.set_xticks(
        range(len(labels)), labels, rotation=45 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center"
    )
    axes.set_ylim(0, 1.08)
    axes.set_ylabel("IoU")
    axes.set_title(_title("IoU per class", split, epoch))
    return to_array(figure)


def curves_figure(history: Mapping[str, Mapping[str, Any]], train_losses: Mapping[int, float]) -> np.ndarray:
    """Loss (training and validation) and validation mIoU per epoch, over the whole run."""

    def position(key: str) -> float:
        epoch, _, sub = key.partition(".")
        return int(epoch) + 1 + (int(sub) / 10 if sub else 0.0)  # "3.1": a second validation of epoch 3

    keys = sorted(history, key=position)
    x = [position(k) for k in keys]
    figure = _new_figure(10.0, 4.0)
    loss_axes, miou_axes = figure.subplots(1, 2)
    if train_losses:
        epochs = sorted(train_losses)
        loss_axes.plot([e + 1 for e in epochs], [train_losses[e] for e in epochs], marker="o", label="train")
    loss_axes.plot(x, [history[k].get("loss") for k in keys], marker="o", label="validation")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("loss")
    loss_axes.legend()
    loss_axes.set_title("Loss")
    miou_axes.plot(x, [history[k].get("Average/IoU") for k in keys], marker="o", color="tab:green")
    miou_axes.set_xlabel("epoch")
    miou_axes.set_ylabel("mIoU")
    miou_axes.set_ylim(0, 1)
    miou_axes.set_title("Validation mIoU")
    return to_array(figure)
