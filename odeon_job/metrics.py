"""Figures derived from a confusion matrix (rows = truth, columns = prediction, pixel counts).

A class absent from both truth and prediction has no IoU (NaN) and is left out of the mean, so a
class that never occurs in a validation set neither helps nor hurts its mIoU.
"""

from __future__ import annotations

import torch


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """TP / (TP + FP + FN) per class; NaN for a class absent from both truth and prediction."""
    confusion = confusion.double()
    true_positives = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - true_positives
    return torch.where(union > 0, true_positives / union.clamp(min=1), torch.full_like(union, float("nan")))


def mean_iou(confusion: torch.Tensor) -> float:
    """The mean IoU of the classes present in truth or prediction (0 when there are none)."""
    iou = iou_per_class(confusion)
    present = iou[~iou.isnan()]
    return float(present.mean()) if present.numel() else 0.0
