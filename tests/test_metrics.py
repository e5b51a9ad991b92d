"""Every figure against an independent NumPy computation from pixel labels (not from the matrix)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from odeon_job.training.metrics import NAMES, confusion_metrics, row_normalised

LABELS = ("batiment", "eau", "foret", "route", "champ", "neige")


def _numpy_figures(truth: np.ndarray, prediction: np.ndarray, n: int) -> dict[str, float | None]:
    """The documented definitions, straight from the labels of every pixel."""

    def safe(a: float, b: float) -> float:
        return a / b if b else 0.0

    total = truth.size
    per_class: dict[str, list[float | None]] = {name: [] for name in NAMES}
    tp_all = fp_all = fn_all = tn_all = 0
    for c in range(n):
        t, p = truth == c, prediction == c
        tp, fp, fn = np.sum(t & p), np.sum(~t & p), np.sum(t & ~p)
        tn = np.sum(~t & ~p)
        tp_all, fp_all, fn_all, tn_all = tp_all + tp, fp_all + fp, fn_all + fn, tn_all + tn
        present = bool(t.any() or p.any())
        values = {
            "Accuracy": safe(tp + tn, total),
            "Precision": safe(tp, tp + fp),
            "Recall": safe(tp, tp + fn),
            "Specificity": safe(tn, tn + fp),
            "F1-Score": safe(2 * tp, 2 * tp + fp + fn),
            "IoU": safe(tp, tp + fp + fn),
        }
        for name in NAMES:
            per_class[name].append(values[name] if present else None)
    pixel_accuracy = float(np.mean(truth == prediction))
    figures: dict[str, float | None] = {
        "Overall/Accuracy": pixel_accuracy,
        "Overall/Precision": pixel_accuracy,
        "Overall/Recall": pixel_accuracy,
        "Overall/F1-Score": pixel_accuracy,
        "Overall/Specificity": safe(tn_all, tn_all + fp_all),
        "Overall/IoU": safe(tp_all, tp_all + fp_all + fn_all),
    }
    for name in NAMES:
        present = [v for v in per_class[name] if v is not None]
        figures[f"Average/{name}"] = float(np.mean(present))
        for label, value in zip(LABELS[:n], per_class[name], strict=True):
            figures[f"{label}/{name}"] = value
    return figures


@pytest.mark.parametrize("seed", range(6))
def test_every_figure_matches_numpy_with_absent_and_missed_classes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 6
    truth = rng.choice([0, 1, 2, 4], size=(3, 20, 20))  # 3 and 5 never in the truth
    noise = rng.choice([0, 1, 3], size=truth.shape)  # 3 predicted (wrongly), 4 and 5 never
    prediction = np.where(rng.random(truth.shape) < 0.6, truth, noise)
    prediction = np.where(prediction == 4, 2, prediction)  # class 4 is in the truth but never predicted
    confusion = MulticlassConfusionMatrix(num_classes=n)
    confusion.update(torch.from_numpy(prediction), torch.from_numpy(truth))
    figures = confusion_metrics(confusion.compute(), LABELS)
    expected = _numpy_figures(truth, prediction, n)
    assert figures.keys() == expected.keys()
    for key, value in expected.items():
        assert figures[key] == pytest.approx(value), key
    assert figures["neige/IoU"] is None and figures["neige/Accuracy"] is None  # absent from both: no figures
    assert figures["route/IoU"] == 0.0 and figures["champ/Precision"] == 0.0  # predicted only / missed: 0
    assert len(figures) == 6 * (2 + n)


def test_figures_of_a_perfect_prediction() -> None:
    cm = torch.tensor([[5, 0, 0], [0, 3, 0], [0, 0, 0]])
    figures = confusion_metrics(cm, ("a", "b", "c"))
    assert all(figures[f"Average/{name}"] == 1.0 for name in NAMES)
    assert figures["Overall/IoU"] == 1.0 and figures["c/IoU"] is None


def test_rows_are_truth_and_columns_prediction() -> None:
    cm = torch.tensor([[3, 1], [0, 0]])  # 4 pixels of class 0: 3 right, 1 predicted as class 1
    figures = confusion_metrics(cm, ("a", "b"))
    assert (figures["a/Recall"], figures["a/Precision"], figures["b/Precision"]) == (0.75, 1.0, 0.0)
    assert figures["a/IoU"] == 0.75 and figures["b/IoU"] == 0.0
    assert figures["Average/IoU"] == pytest.approx(0.375)
    assert row_normalised(cm) == [[0.75, 0.25], [0.0, 0.0]]
    assert confusion_metrics(torch.zeros(3, 3, dtype=torch.int64), ("a", "b", "c"))["Average/IoU"] is None


def test_sums_add_up_vectors_and_keep_a_nan() -> None:
    """A loss's sums over pixels, added over batches (and processes) in float64."""
    from odeon_job.training.metrics import Sums

    sums = Sums(2)
    sums.update(torch.tensor([1.0, 10.0]))
    sums.update(torch.tensor([2.0, 30.0]))
    assert sums.compute().tolist() == [3.0, 40.0] and sums.compute().dtype == torch.float64
    sums.update(torch.tensor([float("nan"), 5.0]))
    assert torch.isnan(sums.compute()[0])


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_the_metrics_and_the_bit_output_pick_the_same_class_where_probabilities_tie(loss: str) -> None:
    """Logits that differ in float32 but whose probabilities do not (a softmax of 0 vs 1e-9; sigmoids
    saturated at 1): the argmax of the logits said class 1, the bit output (argmax of probabilities) class 0, so
    a pixel scored as one class was written as another. One rule now: the first class of highest probability."""
    from odeon_job.outputs.prediction_files import encode
    from odeon_job.training.segmentation_module import SegmentationModule

    module = SegmentationModule("lightunet", 3, ["a", "b"], loss=loss)
    tie = [0.0, 1e-9] if loss == "ce" else [30.0, 40.0]
    logits = torch.tensor(tie).reshape(1, 2, 1, 1).repeat(1, 1, 2, 2)
    assert logits.argmax(dim=1).unique().tolist() == [1]  # the logits do tell
    object.__setattr__(module, "network", lambda image: logits)
    batch = {
        "image": torch.zeros(1, 3, 2, 2),
        "mask": torch.zeros(1, 2, 2, dtype=torch.long),
        "shape": torch.tensor([[2, 2]]),
    }
    module._evaluate(batch, "test")
    confusion = module.split_sums("test").confusion.compute()
    written = encode(module.probabilities(logits)[0].numpy(), "bit")
    assert int(confusion[0, 0]) == 4  # scored as class 0 ...
    assert written[0].all() and not written[1].any()  # ... and written as class 0


def test_a_label_that_names_the_figures_over_all_classes_is_refused_not_merged() -> None:
    """Average/IoU would have been the class's own IoU (an older checkpoint may still carry such a label)."""
    with pytest.raises(ValueError, match='class label "Average"'):
        confusion_metrics(torch.eye(2, dtype=torch.int64), ["Average", "b"])
