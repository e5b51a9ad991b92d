from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from odeon_job.metrics import iou_per_class, mean_iou


def _numpy_miou(truth: np.ndarray, prediction: np.ndarray, n: int) -> float:
    ious = []
    for c in range(n):
        intersection = np.sum((truth == c) & (prediction == c))
        union = np.sum((truth == c) | (prediction == c))
        if union:
            ious.append(intersection / union)
    return float(np.mean(ious))


@pytest.mark.parametrize("seed", range(5))
def test_mean_iou_matches_numpy_with_absent_classes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 6
    truth = rng.choice([0, 1, 2, 4], size=(3, 16, 16))  # classes 3 and 5 never occur in the truth...
    prediction = np.where(rng.random((3, 16, 16)) < 0.7, truth, rng.choice([0, 1, 3], size=(3, 16, 16)))
    confusion = MulticlassConfusionMatrix(num_classes=n)
    confusion.update(torch.from_numpy(prediction), torch.from_numpy(truth))
    cm = confusion.compute()
    assert mean_iou(cm) == pytest.approx(_numpy_miou(truth, prediction, n))
    iou = iou_per_class(cm)
    assert iou[5].isnan() and not iou[3].isnan()  # ... 3 is predicted (IoU 0), 5 is nowhere (no IoU)
    assert iou[3].item() == 0.0


def test_rows_are_truth_and_columns_prediction() -> None:
    cm = torch.tensor([[3, 1], [0, 0]])  # 3 pixels of class 0 right, 1 predicted as class 1
    assert iou_per_class(cm).tolist() == pytest.approx([0.75, 0.0])
    assert mean_iou(torch.zeros(3, 3)) == 0.0
