"""History files: every figure of every validation run, and of the test run, as JSON.

``history_val.json`` is rewritten (atomically) after each validation, so a killed run leaves a valid
file. Keys are epochs as strings ("0" is the first epoch); a second validation within the same epoch
(``val_check_interval`` < 1 or a number of batches) is keyed "<epoch>.1", a third "<epoch>.2", ...
``history_test.json`` has one entry, keyed like the validation that chose the tested checkpoint
(the lowest val_loss). Entries: see :meth:`odeon_job.training.evaluation.Evaluation.entry`.
"""

from __future__ import annotations

import json
from typing import Any

import pytorch_lightning as pl

from odeon_job import storage
from odeon_job.training.evaluation import json_safe
from odeon_job.training.segmentation_module import segmentation_module


def learning_rate(trainer: pl.Trainer) -> float | None:
    """The learning rate the last training step used (see ``SegmentationModule.lr_used``).

    Not the optimizer's current one: Lightning steps epoch-interval schedulers (the cosine ones) before
    the epoch's validation, so at validation time the optimizer already holds the next epoch's rate."""
    used = getattr(trainer.lightning_module, "lr_used", None)
    if used is not None:
        return used
    return float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None


class History(pl.Callback):
    """Keeps the entries of every validation (and the test); writes them to the URLs given, on rank 0."""

    def __init__(self, val_url: str | None = None, test_url: str | None = None) -> None:
        self.val_url, self.test_url = val_url, test_url
        self.entries: dict[str, dict[str, Any]] = {}
        self.test_entry: dict[str, dict[str, Any]] = {}

    def _key(self, epoch: int) -> str:
        key, repeat = str(epoch), 0
        while key in self.entries:
            repeat += 1
            key = f"{epoch}.{repeat}"
        return key

    def best_key(self) -> str | None:
        """The validation with the lowest loss: the one the best val_loss checkpoint comes from."""
        return min(self.entries, key=lambda key: self.entries[key]["loss"], default=None)

    def _write(self, trainer: pl.Trainer, url: str | None, entries: dict[str, Any]) -> None:
        if url and trainer.is_global_zero:
            storage.write_text(url, json.dumps(json_safe(entries), indent=1, allow_nan=False) + "\n")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        evaluation = segmentation_module(pl_module).evaluation["val"]
        self.entries[self._key(trainer.current_epoch)] = evaluation.entry(learning_rate(trainer))
        self._write(trainer, self.val_url, self.entries)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.test_entry = {self.best_key() or "test": segmentation_module(pl_module).evaluation["test"].entry()}
        self._write(trainer, self.test_url, self.test_entry)

    def state_dict(self) -> dict[str, Any]:
        return {"entries": self.entries}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.entries = dict(state_dict.get("entries", {}))
        self.restored = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A resumed run's file holds what its checkpoint holds: a run killed after writing the history of a
        validation but before its checkpoint would otherwise show an entry that is trained again."""
        if getattr(self, "restored", False):
            self._write(trainer, self.val_url, self.entries)
