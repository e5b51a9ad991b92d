"""Model files: Lightning checkpoints with optional .pth exports, and the specification's ".pth" mode.

A ``.pth`` file is the network's plain state dict (``torch.save(model.state_dict())``): it loads with
``torch.load(..., weights_only=True)``, into our models (``init_weights``) or anyone's. An ``odeon_pth``
export (``.odeon.pth``) is the same U-Net state dict under ODEON's layer names, which ODEON's own
``load_state_dict(strict=True)`` takes.

Every model file is written through :mod:`odeon_job.storage` (:class:`StorageCheckpointIO`): a file
appears whole or not at all, locally and in object storage, so a pod killed while saving leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins import CheckpointIO

from odeon_job import storage
from odeon_job.outputs.run_folder import RunFolder, export_path, previous_path
from odeon_job.storage.model_files import load_plain
from odeon_job.training.models.odeon_names import to_odeon
from odeon_job.training.segmentation_module import segmentation_module


def tensors_bytes(data: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return buffer.getvalue()


def exported_state(model: torch.nn.Module, export: str) -> dict[str, torch.Tensor]:
    """What an export of ``model`` holds: its state dict, under ODEON's names for ``odeon_pth``."""
    if export == "odeon_pth":
        return to_odeon(model.state_dict())
    return model.state_dict()


class StorageCheckpointIO(CheckpointIO):
    """Lightning's checkpoint files through our storage layer: atomic writes (Lightning writes a local
    checkpoint in place), S3 settings and retries from the environment, one-line errors naming the URL."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        storage.write_bytes(str(path), tensors_bytes(checkpoint))

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # Always plain values and tensors, whatever the caller asks: a checkpoint never runs code.
        return load_plain(str(path), map_location=map_location)

    def remove_checkpoint(self, path: Any) -> None:
        storage.remove(str(path))


def same_file(a: str, b: str) -> bool:
    """Whether two paths or URLs name the same file (local paths compared once made absolute)."""
    if storage.is_local(a) and storage.is_local(b):
        return os.path.abspath(storage.resolve(a, "")) == os.path.abspath(storage.resolve(b, ""))
    return a.rstrip("/") == b.rstrip("/")


def relocated(state: dict[str, Any], folder: str) -> dict[str, Any]:
    """A ModelCheckpoint's state with every checkpoint path moved into ``folder``, when every such file is
    there; else the state unchanged."""

    def moved(path: str) -> str | None:
        candidate = storage.join(folder, path.replace("\\", "/").rsplit("/", 1)[-1])
        return candidate if storage.exists(candidate) else None

    paths = {key: state.get(key) for key in ("best_model_path", "kth_best_model_path", "last_model_path")}
    new_paths = {key: moved(path) if path else path for key, path in paths.items()}
    best_k = {moved(path): score for path, score in (state.get("best_k_models") or {}).items()}
    if None in best_k or any(path is None for key, path in new_paths.items() if paths[key]):
        return state
    return {**state, **new_paths, "best_k_models": best_k, "dirpath": folder}


class ExportingCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint that writes the ``exports`` (``.pth``, ``odeon_pth``) beside every checkpoint it
    saves and deletes them with the checkpoint (``train_setup.export_checkpoint``).

    It also never deletes the checkpoint a run resumed from, nor a file outside its folder: Lightning
    keeps both rules for local files only, and on ``s3://`` deletes the checkpoint it resumed from
    (Lightning-AI/pytorch-lightning#21813).
    """

    def __init__(self, *args: Any, exports: Sequence[str] = (), **kwargs: Any) -> None:
        # Every validation is a candidate. Left to itself, Lightning saves at the end of the training
        # epoch instead when ``val_check_interval == 1.0``, which an int 1 (validate every batch) also
        # equals: only the epoch's last validation was then ever a candidate, and the best was lost.
        kwargs.setdefault("save_on_train_epoch_end", False)
        super().__init__(*args, **kwargs)
        self.exports = tuple(exports)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A run folder moved since (copied to another disk or bucket) keeps its best checkpoints: their
        paths are taken to the new folder when the files are there. Lightning alone keeps only the old
        best_model_path, which a resumed run that never improves would then test from, and fail."""
        saved = state_dict.get("dirpath")
        if saved and self.dirpath and not same_file(str(saved), str(self.dirpath)):
            state_dict = relocated(state_dict, str(self.dirpath))
        super().load_state_dict(state_dict)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            for export in self.exports:
                storage.write_bytes(
                    export_path(filepath, export),
                    tensors_bytes(exported_state(segmentation_module(trainer.lightning_module).model, export)),
                )

    def _should_remove_checkpoint(self, trainer: pl.Trainer, previous: str, current: str) -> bool:
        if same_file(previous, current):
            return False
        if trainer.ckpt_path is not None and same_file(previous, str(trainer.ckpt_path)):
            return False
        assert self.dirpath is not None
        return same_file(storage.parent(previous), str(self.dirpath))

    def _remove_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            for export in self.exports:
                storage.remove(export_path(filepath, export))


class LastCheckpoint(ExportingCheckpoint):
    """``last.ckpt``, rewritten at every validation, for resuming; the one before it is kept as
    ``last-previous.ckpt``, so that a ``last.ckpt`` found damaged (a store that lost it, a planted file)
    still leaves a checkpoint to resume from."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        if trainer.is_global_zero and storage.exists(filepath):
            storage.move(filepath, previous_path(filepath))
            for export in self.exports:  # an export follows its checkpoint
                if storage.exists(export_path(filepath, export)):
                    storage.move(export_path(filepath, export), export_path(previous_path(filepath), export))
        super()._save_checkpoint(trainer, filepath)


class BestPthFiles(pl.Callback):
    """``model_out_ext: ".pth"``: ``{name}.pth`` (the network's state dict), ``optimizer_{name}.pth`` (the
    optimizer's) and ``train_{name}.pth`` (epoch, step, figures, config), rewritten whenever val_loss
    improves."""

    def __init__(self, folder: RunFolder, name: str) -> None:
        self.folder, self.name = folder, name
        self.best = math.inf

    @property
    def model_path(self) -> str:
        return self.folder.pth_file(self.name)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        module = segmentation_module(pl_module)
        evaluation = module.evaluation["val"]
        if evaluation.loss >= self.best:
            return
        self.best = evaluation.loss
        if not trainer.is_global_zero:
            return
        hyperparameters = dict(module.hparams)
        training = {
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "metrics": evaluation.entry(),
            "config": json.loads(hyperparameters.get("config_json") or "{}"),
            "hyper_parameters": hyperparameters,
        }
        storage.write_bytes(self.model_path, tensors_bytes(module.model.state_dict()))
        optimizer = trainer.optimizers[0].state_dict()
        storage.write_bytes(self.folder.pth_file(self.name, "optimizer"), tensors_bytes(optimizer))
        storage.write_bytes(self.folder.pth_file(self.name, "train"), tensors_bytes(training))

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best", math.inf)
