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
import os
import shutil
from collections.abc import Iterator
from typing import Any

import torch

from odeon_job import storage
from odeon_job.errors import DataError, quote
from odeon_job.training.evaluation import Evaluation, json_safe
from odeon_job.training.metrics import NAMES, confusion_metrics

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


#: The largest history file read (all its entries are in memory at once): one of 1,000 validations of 20 classes
#: is about 24 MB.
MAX_HISTORY_BYTES = 128 * 2**20
#: The most classes a confusion matrix may have: what one entry's figures take in memory stays bounded.
MAX_CLASSES = 1024
#: Pixel counts are whole numbers that float64 holds exactly.
MAX_COUNT = 2**53


def _counts(entry: dict[str, Any], key: str, where: str) -> torch.Tensor:
    """The square matrix of pixel counts ``entry[key]``: whole, finite, non-negative numbers."""
    matrix = entry.get(key)
    if not (
        isinstance(matrix, list)
        and 0 < len(matrix) <= MAX_CLASSES
        and all(isinstance(row, list) and len(row) == len(matrix) for row in matrix)
    ):
        raise DataError(f"{where}: {key} is not a square matrix of pixel counts (of at most {MAX_CLASSES} classes)")
    try:
        counts = torch.tensor(matrix, dtype=torch.float64)
    except (TypeError, ValueError):
        raise DataError(
            f"{where}: {key} is not a square matrix of pixel counts (it holds values that are not numbers)"
        ) from None
    bad = ~(torch.isfinite(counts) & (counts >= 0) & (counts == counts.round()) & (counts <= MAX_COUNT))
    if bad.any():
        row, column = (int(i) for i in bad.nonzero()[0])
        raise DataError(
            f"{where}: {key}[{row}][{column}] is {float(counts[row, column])!r}: a pixel count is a whole "
            f"number from 0 to 2^53"
        )
    return counts.to(torch.int64)


def _number(entry: dict[str, Any], key: str, where: str) -> float | None:
    """``entry[key]`` as a float: a number, or null (a NaN written as JSON); a missing key is None."""
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{where}: {key} is {quote(value, 60)}, not a number")
    return float(value)


def from_odeon(history: dict[str, Any], sanity_check: bool = True) -> dict[str, Any]:
    """ODEON's history → ours. ``sanity_check``: entry "0" is Lightning's sanity check (ODEON's default
    trainer runs one) and is left out; the next entries are epochs 0, 1... (ODEON logged one entry per
    validation without the epoch: with several validations per epoch, they are numbered as epochs)."""
    return dict(_from_odeon_entries(history, sanity_check))


def _from_odeon_entries(history: dict[str, Any], sanity_check: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    keys = sorted(history, key=_int_key)
    if sanity_check and keys and _int_key(keys[0]) == 0:
        keys = keys[1:]
    for epoch, key in enumerate(keys):
        entry = history[key]
        counts = _counts(entry, "cm_macro", f"entry {key!r}")
        labels = class_labels(entry) or [f"class {i + 1}" for i in range(counts.shape[0])]
        if len(labels) != counts.shape[0]:
            raise DataError(f"entry {key!r}: {len(labels)} class labels but a {counts.shape[0]}-class matrix")
        if "loss" not in entry:
            raise DataError(f"entry {key!r}: no loss")
        loss = _number(entry, "loss", f"entry {key!r}")
        evaluation = Evaluation(
            loss=float("nan") if loss is None else loss, confusion=counts, metrics=confusion_metrics(counts, labels)
        )
        yield str(epoch), evaluation.entry(_number(entry, "learning rate", f"entry {key!r}"))


def _odeon_figures(counts: torch.Tensor, labels: list[str]) -> dict[str, Any]:
    cm = counts.to(torch.float64)
    tp = cm.diagonal()
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    tn = cm.sum() - tp - fp - fn
    per_class = {
        "Accuracy": (tp + tn) / (tp + fp + tn + fn + SMOOTH),
        "Precision": tp / (tp + fp + SMOOTH),
        "Recall": tp / (tp + fn + SMOOTH),
        "Specificity": tn / (tn + fp + SMOOTH),
        "F1-Score": 2 * tp / (2 * tp + fp + fn + SMOOTH),
        "IoU": tp / (tp + fp + fn + SMOOTH),
        "FPR": fp / (fp + tn + SMOOTH),
    }
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
    return dict(_to_odeon_entries(history))


def _to_odeon_entries(history: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, key in enumerate(sorted(history, key=_epoch_key), start=1):
        entry = history[key]
        counts = _counts(entry, "cm_micro", f"entry {key!r}")
        labels = class_labels(entry) or [f"class {i + 1}" for i in range(counts.shape[0])]
        odeon = {**_odeon_figures(counts, labels), "loss": _number(entry, "loss", f"entry {key!r}")}
        if "learning rate" in entry:
            odeon["learning rate"] = _number(entry, "learning rate", f"entry {key!r}")
        yield str(number), odeon


def _int_key(key: str) -> int:
    try:
        return int(key)
    except ValueError:
        raise DataError(f'{key!r} is not an entry number of an ODEON history ("0", "1"...)') from None


def _epoch_key(key: str) -> tuple[int, int]:
    """Our keys: "3" (epoch 3), "3.1" (its second validation)."""
    epoch, _, sub = key.partition(".")
    try:
        return int(epoch), int(sub or 0)
    except ValueError:
        raise DataError(f'{key!r} is not an epoch key of an odeon-job history ("0", "3.1"...)') from None


def convert_file(source: str, target: str, to: str, sanity_check: bool = True) -> int:
    """Convert the history at ``source`` (``to``: "odeon" or "ours") into ``target``; returns its entries."""

    size = storage.size(source)
    if size is not None and size > MAX_HISTORY_BYTES:
        raise DataError(
            f"{source}: {size} bytes, more than the {MAX_HISTORY_BYTES} a history is read up to (1,000 "
            "validations of 20 classes take about 24 MB): is it the right file?"
        )
    try:
        history = json.loads(storage.read_text(source))
    except json.JSONDecodeError as error:
        raise DataError(f"{source}: not JSON ({error.msg} at line {error.lineno})") from error
    except RecursionError:
        raise DataError(f"{source}: objects or lists nested too deeply for a history") from None
    if not isinstance(history, dict) or not all(isinstance(v, dict) for v in history.values()):
        raise DataError(f"{source}: a history is a JSON object of entries (objects)")
    entries = _to_odeon_entries(history) if to == "odeon" else _from_odeon_entries(history, sanity_check)
    staging = storage.staging_folder("history")
    try:
        # Written an entry at a time: memory holds the history read and one converted entry, not two histories.
        local, count = os.path.join(staging, "history.json"), 0
        with open(local, "w", encoding="utf-8") as stream:
            stream.write("{")
            for key, entry in entries:
                text = json.dumps(json_safe(entry), indent=2, allow_nan=False).replace("\n", "\n  ")
                stream.write(f"{',' if count else ''}\n  {json.dumps(key)}: {text}")
                count += 1
            stream.write("\n}\n")
        storage.put_file(local, target)
    except DataError as error:
        raise DataError(f"{source}: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return count
