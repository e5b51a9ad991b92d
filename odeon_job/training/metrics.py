"""Every figure of a validation or test run, derived from one confusion matrix.

The matrix holds pixel counts, rows = truth, columns = prediction, summed over all batches (and,
under DDP, all processes). For class c, one-vs-rest: TP, FP (predicted c, truth not c), FN (truth c,
predicted not c), TN (the rest). Then, per class and as ``Average`` (the mean over classes, macro):

- Accuracy = (TP + TN) / N, Precision = TP / (TP + FP), Recall = TP / (TP + FN),
  Specificity = TN / (TN + FP), F1-Score = 2 TP / (2 TP + FP + FN), IoU = TP / (TP + FP + FN);

and ``Overall`` (micro) pools the counts of all classes first, as torchmetrics' micro averages do:
Accuracy = Precision = Recall = F1-Score = ΣTP / N (the pixel accuracy, "overall accuracy"),
Specificity = ΣTN / (ΣTN + ΣFP), IoU = ΣTP / (ΣTP + ΣFP + ΣFN).

A class absent from both truth and prediction has no figures (None, ``null`` in JSON) and is left
out of every Average; a ratio 0/0 of a class that is present (e.g. the precision of a class never
predicted) counts as 0, so missing a class lowers the averages. Values are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from odeon_job.config.catalog import label_problem

NAMES = ("Accuracy", "Precision", "Recall", "Specificity", "F1-Score", "IoU")

#: Every score of a run by name ("Overall/Accuracy", "batiment/IoU"...); None for an absent class.
Scores = dict[str, float | None]


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1e-300), torch.zeros_like(numerator))


def _figures(
    tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor, total: torch.Tensor
) -> dict[str, torch.Tensor]:
    return {
        "Accuracy": _ratio(tp + tn, total.expand_as(tp)),
        "Precision": _ratio(tp, tp + fp),
        "Recall": _ratio(tp, tp + fn),
        "Specificity": _ratio(tn, tn + fp),
        "F1-Score": _ratio(2 * tp, 2 * tp + fp + fn),
        "IoU": _ratio(tp, tp + fp + fn),
    }


def confusion_metrics(confusion: torch.Tensor, labels: Sequence[str]) -> Scores:
    """``{"Overall/Accuracy": …, "Average/IoU": …, "<label>/F1-Score": …}`` for every figure."""
    problem = label_problem(labels)
    if problem:  # (the configuration refuses such labels; a checkpoint made before it did may carry one)
        raise ValueError(f"class label {problem}")
    cm = confusion.to(torch.float64).cpu()
    tp = cm.diagonal()
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    total = cm.sum()
    tn = total - tp - fp - fn
    present = (tp + fp + fn) > 0
    per_class = _figures(tp, fp, fn, tn, total)
    overall_accuracy = _ratio(tp.sum(), total)
    overall = {
        "Accuracy": overall_accuracy,
        "Precision": overall_accuracy,
        "Recall": overall_accuracy,
        "F1-Score": overall_accuracy,
        "Specificity": _ratio(tn.sum(), tn.sum() + fp.sum()),
        "IoU": _ratio(tp.sum(), tp.sum() + fp.sum() + fn.sum()),
    }
    result: Scores = {}
    for name in NAMES:
        result[f"Overall/{name}"] = float(overall[name])
        result[f"Average/{name}"] = float(per_class[name][present].mean()) if present.any() else None
        for index, label in enumerate(labels):
            result[f"{label}/{name}"] = float(per_class[name][index]) if present[index] else None
    return result


def row_normalised(confusion: torch.Tensor) -> list[list[float]]:
    """Each row divided by its sum (the fraction of a true class predicted as each class); empty rows 0."""
    cm = confusion.to(torch.float64).cpu()
    return _ratio(cm, cm.sum(1, keepdim=True).expand_as(cm)).tolist()


class Sums(Metric):
    """A vector of sums over batches, added across processes (float64): a loss's sums over pixels
    (:class:`odeon_job.training.losses.SummedLoss`), from which the split's loss is computed once. A NaN stays NaN."""

    full_state_update = False
    total: torch.Tensor  # a metric state (add_state)

    def __init__(self, size: int) -> None:
        super().__init__()
        self.add_state("total", torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        self.total += values.detach().to(torch.float64)

    def compute(self) -> torch.Tensor:
        return self.total
