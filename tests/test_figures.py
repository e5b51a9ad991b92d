"""The pictures: drawn from numbers and tiles already in memory, readable from 2 to 20 classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from odeon_job.data.transforms import InputScaling
from odeon_job.training.metrics import confusion_metrics
from odeon_job.training.plots import (
    Sample,
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
    samples = [Sample(torch.rand(3, 2, 2), truth, torch.tensor([[0, 1], [1, 1]])) for _ in range(2)]
    assert samples_figure(samples, labels, "val", 1).shape[2] == 3
    confusion = torch.tensor([[5, 1, 0], [0, 4, 0], [0, 0, 0]])  # eau absent: its bar says so
    assert iou_figure(confusion_metrics(confusion, labels), labels, "test", None).shape[2] == 3
    history = {
        "0": {"loss": 0.9, "Average/IoU": 0.3},
        "1": {"loss": 0.5, "Average/IoU": 0.6},
        "1.1": {"loss": 0.4, "Average/IoU": 0.65},
    }
    assert curves_figure(history, {0: 1.0, 1: 0.6}).shape[2] == 3


def test_class_colours_are_distinct_and_ignored_pixels_black() -> None:
    colours = palette(15)
    assert len({tuple(c) for c in colours.round(3)}) == 15
    pixels = coloured(torch.tensor([[0, -1]]), colours)
    assert np.allclose(pixels[0, 0], colours[0]) and np.allclose(pixels[0, 1], 0.0)


def test_the_tiles_shown_are_the_network_s_input_back_on_the_0_1_scale() -> None:
    scaling = InputScaling(255.0, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3])
    raw = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert torch.allclose(scaling.unit_from_input(scaling(raw)), raw.float() / 255, atol=1e-5)
