"""The validation history: one entry per validation run, written as JSON after each one.

Keys are epochs as strings ("0" is the first epoch); a second validation within the same epoch
(``val_check_interval`` < 1 or a number of batches) is keyed "<epoch>.1", a third "<epoch>.2", ...
"""

from __future__ import annotations

import json
from typing import Any

import pytorch_lightning as pl

from odeon_job import storage


def learning_rate(trainer: pl.Trainer) -> float:
    return float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else float("nan")


def validation_entry(trainer: pl.Trainer) -> dict[str, float]:
    """The figures of the validation run that just ended."""
    metrics = trainer.callback_metrics
    return {
        "loss": float(metrics["val_loss"]),
        "Average/IoU": float(metrics["val_miou"]),
        "learning rate": learning_rate(trainer),
    }


class ValidationHistory(pl.Callback):
    """Collects validation entries; writes them atomically to ``url`` (when given) on rank 0."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url
        self.entries: dict[str, dict[str, float]] = {}

    def _key(self, epoch: int) -> str:
        key, repeat = str(epoch), 0
        while key in self.entries:
            repeat += 1
            key = f"{epoch}.{repeat}"
        return key

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.entries[self._key(trainer.current_epoch)] = validation_entry(trainer)
        if self.url and trainer.is_global_zero:
            storage.write_text(self.url, json.dumps(self.entries, indent=2) + "\n")

    @property
    def last(self) -> dict[str, float] | None:
        return next(reversed(self.entries.values()), None)

    def state_dict(self) -> dict[str, Any]:
        return {"entries": self.entries}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.entries = dict(state_dict.get("entries", {}))
