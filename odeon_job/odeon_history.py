"""History files between ODEON's format (``metrics.json`` of its JSON logger, 2022) and ours
(``history_val.json``), so that plots and dashboards built on either keep working.

ODEON's entries are keyed "0", "1"... in the order they were logged ("0" is Lightning's sanity check,
two validation batches of the untrained model, when it ran), hold figures in percent computed with a
1e-6 smoothing term (a class absent from truth and prediction scores 0, and counts in every average),
``cm_macro`` = the pixel counts, ``cm_micro`` = [[ΣTP, ΣFP], [ΣFN, ΣTN]] over classes, and also
per-class and average ``FPR``. ``Overall/Accuracy`` is the pixel accuracy; ODEON's code writes the micro
IoU under ``Overall/Precision``. Both directions go through the pixel counts, which both formats keep:
every figure is recomputed by the target's own rules rather than rescaled, so nothing is guessed.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from odeon_job.errors import DataError
from odeon_job.metrics import NAMES, confusion_metrics
from odeon_job.module import Evaluation

#: ODEON's small term added to every denominator.
SMOOTH = 1e-6
ODEON_NAMES = (*NAMES, "FPR")
_POOLED = ("Overall", "Average")


def class_labels(entry: dict[str, Any]) -> list[str]:
    """The class labels of a history entry, in class order (the order the figures were written in)."""
    labels: list[str] = []
    for key in entry:
        label, _, name = key.rpartition("/")
        if label and label not in _POOLED and name in ODEON_NAMES and label not in labels:
            labels.append(label)
    return labels


def _counts(entry: dict[str, Any], key: str, where: str) -> torch.Tensor:
    matrix = entry.get(key)
    try:
        counts = torch.tensor(matrix, dtype=torch.float64)
    except (TypeError, ValueError):
        counts = None
    if counts is None or counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise DataError(f"{where}: {key} is not a square matrix of pixel counts")
    return counts.round().to(torch.int64)


def from_odeon(history: dict[str, Any], sanity_check: bool = True) -> dict[str, Any]:
    """ODEON's history → ours. ``sanity_check``: entry "0" is Lightning's sanity check (ODEON's default
    trainer runs one) and is left out; the next entries are epochs 0, 1... (ODEON logged one entry per
    validation without the epoch: with several validations per epoch, they are numbered as epochs)."""
    keys = sorted(history, key=_int_key)
    if sanity_check and keys and _int_key(keys[0]) == 0:
        keys = keys[1:]
    converted: dict[str, Any] = {}
    for epoch, key in enumerate(keys):
        entry = history[key]
        counts = _counts(entry, "cm_macro", f"entry {key!r}")
        labels = class_labels(entry) or [f"class {i + 1}" for i in range(counts.shape[0])]
        if len(labels) != counts.shape[0]:
            raise DataError(f"entry {key!r}: {len(labels)} class labels but a {counts.shape[0]}-class matrix")
        evaluation = Evaluation(loss=float(entry["loss"]), confusion=counts, metrics=confusion_metrics(counts, labels))
        converted[str(epoch)] = evaluation.entry(entry.get("learning rate"))
    return converted


def _odeon_figures(counts: torch.Tensor, labels: list[str]) -> dict[str, Any]:
    cm = counts.to(torch.float64)
    tp = cm.diagonal()
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    tn = cm.sum() - tp - fp - fn
    per_class = {"Accuracy": (tp + tn) / (tp + fp + tn + fn + SMOOTH), "Precision": tp / (tp + fp + SMOOTH),
                 "Recall": tp / (tp + fn + SMOOTH), "Specificity": tn / (tn + fp + SMOOTH),
                 "F1-Score": 2 * tp / (2 * tp + fp + fn + SMOOTH), "IoU": tp / (tp + fp + fn + SMOOTH),
                 "FPR": fp / (fp + tn + SMOOTH)}
    pooled = [tp.sum(), fp.sum(), fn.sum(), tn.sum()]
    figures: dict[str, Any] = {
        "cm_macro": counts.tolist(),
        "cm_micro": torch.stack(pooled).reshape(2, 2).tolist(),
        "Overall/Accuracy": float(pooled[0] / (pooled[0] + pooled[1] + SMOOTH) * 100),
        "Overall/Precision": float(pooled[0] / (pooled[0] + pooled[1] + pooled[2] + SMOOTH) * 100),  # as ODEON
    }
    for name, values in per_class.items():
        figures[f"Average/{name}"] = float(values.mean() * 100)
        figures.update({f"{label}/{name}": float(values[i] * 100) for i, label in enumerate(labels)})
    return figures


def to_odeon(history: dict[str, Any]) -> dict[str, Any]:
    """Our history → ODEON's: one entry per validation keyed "1", "2"... (no "0": no sanity check was run, and
    ODEON readers take "0" for it)."""
    converted: dict[str, Any] = {}
    for number, key in enumerate(sorted(history, key=_epoch_key), start=1):
        entry = history[key]
        counts = _counts(entry, "cm_micro", f"entry {key!r}")
        labels = class_labels(entry) or [f"class {i + 1}" for i in range(counts.shape[0])]
        odeon = {**_odeon_figures(counts, labels), "loss": entry.get("loss")}
        if "learning rate" in entry:
            odeon["learning rate"] = entry["learning rate"]
        converted[str(number)] = odeon
    return converted


def _int_key(key: str) -> int:
    try:
        return int(key)
    except ValueError:
        raise DataError(f"{key!r} is not an entry number of an ODEON history (\"0\", \"1\"...)") from None


def _epoch_key(key: str) -> tuple[int, int]:
    """Our keys: "3" (epoch 3), "3.1" (its second validation)."""
    epoch, _, sub = key.partition(".")
    try:
        return int(epoch), int(sub or 0)
    except ValueError:
        raise DataError(f"{key!r} is not an epoch key of an odeon-job history (\"0\", \"3.1\"...)") from None


def convert_file(source: str, target: str, to: str, sanity_check: bool = True) -> int:
    """Convert the history at ``source`` (``to``: "odeon" or "ours") into ``target``; returns its entries."""
    from odeon_job import storage
    from odeon_job.callbacks.history import json_safe

    try:
        history = json.loads(storage.read_text(source))
    except json.JSONDecodeError as error:
        raise DataError(f"{source}: not JSON ({error.msg} at line {error.lineno})") from error
    if not isinstance(history, dict) or not all(isinstance(v, dict) for v in history.values()):
        raise DataError(f"{source}: a history is a JSON object of entries (objects)")
    try:
        converted = to_odeon(history) if to == "odeon" else from_odeon(history, sanity_check)
    except DataError as error:
        raise DataError(f"{source}: {error}") from error
    except KeyError as error:
        raise DataError(f"{source}: an entry has no {error}") from error
    storage.write_text(target, json.dumps(json_safe(converted), indent=2, allow_nan=False) + "\n")
    return len(converted)
