"""The pictures: drawn from numbers and tiles already in memory, readable from 2 to 20 classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from odeon_job.config.colors import default_colors
from odeon_job.data.transforms import InputScaling
from odeon_job.training.metrics import confusion_metrics
from odeon_job.training.plots import (
    ShownTile,
    coloured,
    confusion_figure,
    curves_figure,
    iou_figure,
    palette,
    png_bytes,
    samples_figure,
)


@pytest.mark.parametrize("n_classes", [2, 20])
def test_a_confusion_matrix_is_drawn_for_few_and_many_classes(n_classes: int) -> None:
    generator = torch.Generator().manual_seed(0)
    confusion = torch.randint(0, 1000, (n_classes, n_classes), generator=generator)
    confusion[-1] = 0  # a class absent from the truth: its row shows dashes, not 0 %
    labels = [f"class {i + 1}" for i in range(n_classes)]
    image = confusion_figure(confusion, labels, "val", 3, 0.5)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] >= 400 and image.shape[1] >= 400  # room for the labels
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20  # drawn, not a blank canvas
    assert png_bytes(image)[:8] == b"\x89PNG\r\n\x1a\n"


def test_samples_iou_and_curves_are_drawn() -> None:
    labels = ["batiment", "route", "eau"]
    truth = torch.tensor([[0, 1], [2, -1]])
    samples = [ShownTile(torch.rand(3, 2, 2), truth, torch.tensor([[0, 1], [1, 1]])) for _ in range(2)]
    assert samples_figure(samples, labels, default_colors(3), "val", 1).shape[2] == 3
    confusion = torch.tensor([[5, 1, 0], [0, 4, 0], [0, 0, 0]])  # eau absent: its bar says so
    assert iou_figure(confusion_metrics(confusion, labels), labels, default_colors(3), "test", None).shape[2] == 3
    history = {
        "0": {"loss": 0.9, "Average/IoU": 0.3},
        "1": {"loss": 0.5, "Average/IoU": 0.6},
        "1.1": {"loss": 0.4, "Average/IoU": 0.65},
    }
    assert curves_figure(history, {0: 1.0, 1: 0.6}).shape[2] == 3


def test_the_samples_figure_puts_input_truth_and_prediction_where_they_belong() -> None:
    """A known layout read back from the picture's pixels: a red input in the first column; the truth (class a on
    the left half, b on the right) in the second; the prediction (all b) in the third."""
    labels = ["a", "b"]
    truth = torch.zeros(32, 32, dtype=torch.long)
    truth[:, 16:] = 1
    image = torch.zeros(3, 32, 32)
    image[0] = 1.0
    picture = samples_figure(
        [ShownTile(image, truth, torch.ones(32, 32, dtype=torch.long))], labels, default_colors(2), "val", 1
    )
    width = picture.shape[1]

    def where(colour: np.ndarray) -> np.ndarray:
        return np.abs(picture.astype(int) - colour).max(axis=2) <= 2

    red = where(np.array([255, 0, 0]))
    rows = np.nonzero(red.any(axis=1))[0]
    panels = slice(rows.min(), rows.max() + 1)  # the tiles' rows (the legend's patches lie below)
    a, b = (where((colour * 255).round().astype(int))[panels] for colour in palette(default_colors(2)))
    red_columns, a_columns, b_columns = (np.nonzero(mask.any(axis=0))[0] for mask in (red[panels], a, b))
    assert red_columns.max() < width / 3  # the input, first
    assert width / 3 < a_columns.min() and a_columns.max() < 2 * width / 3  # class a: the truth's left half only
    assert a_columns.max() < b_columns.min()  # ... left of class b
    assert b_columns.max() > 2 * width / 3 and b[:, : int(2 * width / 3)].any()  # b in the truth and the prediction
    assert b[:, int(2 * width / 3) :].sum() > 1.5 * b[:, : int(2 * width / 3)].sum()  # all of the prediction is b


def test_class_colours_are_distinct_and_ignored_pixels_black() -> None:
    colours = palette(default_colors(30))
    assert len({tuple(c) for c in colours.round(3)}) == 30
    assert not (colours == 0).all(axis=1).any()  # no class is drawn in the ignored pixels' black
    pixels = coloured(torch.tensor([[0, -1]]), colours)
    assert np.allclose(pixels[0, 0], colours[0]) and np.allclose(pixels[0, 1], 0.0)


def test_the_tiles_shown_are_the_network_s_input_back_on_the_0_1_scale() -> None:
    scaling = InputScaling(255.0, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3])
    raw = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert torch.allclose(scaling.unit_from_input(scaling(raw)), raw.float() / 255, atol=1e-5)


def test_the_iou_bars_have_the_classes_own_colours() -> None:
    labels, colors = ["water", "forest"], ["#0000ff", "#00ff00"]
    picture = iou_figure({"water/IoU": 0.9, "forest/IoU": 0.8, "Average/IoU": 0.85}, labels, colors, "test", None)
    blue = (np.abs(picture.astype(int) - [0, 0, 255]).max(axis=2) <= 2).sum()
    green = (np.abs(picture.astype(int) - [0, 255, 0]).max(axis=2) <= 2).sum()
    assert blue > 1000 and green > 1000  # water is blue, forest green: not a hue wheel's choice
