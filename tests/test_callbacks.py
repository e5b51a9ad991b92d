"""The output callbacks against a small real Trainer: the real module on in-memory batches (no GeoTIFF, no
server), so that history, console report and TensorBoard pictures are tested on their own,
not only through full trainings."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from odeon_job.outputs.callbacks.figures import FigurePublisher
from odeon_job.outputs.callbacks.history import History
from odeon_job.outputs.callbacks.report import ValidationReport
from odeon_job.outputs.loggers.tensorboard import TensorBoardOutput
from odeon_job.training.segmentation_module import SegmentationModule

LABELS = ["bati", "route", "eau"]


class Tiles(Dataset[dict[str, torch.Tensor]]):
    """``n`` 16x16 uint8 tiles whose class is the brightest band, as the workers send them."""

    def __init__(self, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, 16, 16), generator=generator, dtype=torch.uint8)
        self.masks = self.images.argmax(dim=1).to(torch.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "mask": self.masks[index], "index": torch.tensor(index)}


def _fit(
    tmp_path: Path,
    callbacks: list[pl.Callback],
    epochs: int = 2,
    val_check_interval: float = 1.0,
    loggers: list[Any] | None = None,
) -> tuple[pl.Trainer, SegmentationModule]:
    pl.seed_everything(0, verbose=False)
    module = SegmentationModule("lightunet", 3, LABELS, lr=0.01, epochs=epochs)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=loggers or False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        val_check_interval=val_check_interval,
        num_sanity_val_steps=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(Tiles(8, 0), batch_size=2), DataLoader(Tiles(4, 1), batch_size=2))
    return trainer, module


def test_history_keys_every_validation_by_epoch_and_writes_strict_json(tmp_path: Path) -> None:
    history = History(str(tmp_path / "history_val.json"))
    _fit(tmp_path, [history], epochs=2, val_check_interval=0.5)  # two validations per epoch, no sanity entry
    assert list(history.entries) == ["0", "0.1", "1", "1.1"]
    written = json.loads((tmp_path / "history_val.json").read_text())
    assert written.keys() == history.entries.keys()
    entry = written["1.1"]
    assert sum(map(sum, entry["cm_micro"])) == 4 * 16 * 16  # every pixel of the 4 validation tiles, once
    assert entry["learning rate"] == pytest.approx(0.01) and 0 <= entry["Average/IoU"] <= 1


def test_the_report_says_one_line_per_validation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="odeon"):
        _fit(tmp_path, [ValidationReport()], epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]  # not the sanity check
    assert all("train_loss" in line and "val_miou" in line for line in lines)


def test_the_tensorboard_logger_gets_metrics_and_the_pictures_drawn_from_the_batches(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = TensorBoardOutput(str(tmp_path / "tb"), log_learning_rate=True)
    history = History()
    _, module = _fit(tmp_path, [history, FigurePublisher(history)], epochs=2, loggers=[board])  # Lightning finalizes
    val = EventAccumulator(str(tmp_path / "tb" / "val"), size_guidance={"images": 0}).Reload()
    assert {"confusion matrix", "IoU per class", "samples", "training curves"} <= set(val.Tags()["images"])
    assert len(val.Images("samples")) == 2  # one per validation, none for the sanity check
    assert module.evaluation["val"].samples and module.evaluation["val"].samples[0].image.shape == (3, 16, 16)
    assert sorted(module.train_losses) == [0, 1]
    train = EventAccumulator(str(tmp_path / "tb" / "train"), size_guidance={"histograms": 0}).Reload()
    assert "inc.0.weight" in train.Tags()["histograms"] and len(train.Scalars("learning rate")) == 2
    # The curves of train and val line up at the training's global step (4 batches per epoch).
    assert [e.step for e in train.Scalars("loss")] == [e.step for e in val.Scalars("loss")] == [4, 8]
    assert [e.step for e in val.Images("confusion matrix")] == [4, 8]
    assert len(train.Scalars("Average/IoU")) == 2  # the training batches' scores, as they passed


def test_the_samples_are_the_validation_tiles_as_the_network_saw_them(tmp_path: Path) -> None:
    _, module = _fit(tmp_path, [], epochs=1)
    val = Tiles(4, 1)
    samples = module.evaluation["val"].samples
    assert len(samples) == 4
    for sample, image, mask in zip(samples, val.images, val.masks, strict=True):
        assert torch.allclose(sample.image, image.float() / 255, atol=1e-5)
        assert torch.equal(sample.truth, mask.long())


def test_the_private_lightning_methods_we_override_exist_with_our_signatures() -> None:
    """ExportingCheckpoint and ReportingEarlyStopping override private methods of Lightning, and EpochOrder reads
    one private attribute (no public hook does what they do). pyproject.toml's range (>=2.5,<2.7) is where these
    exist with these signatures and the callback, checkpoint and training tests pass (2.5.0, 2.6.0, 2.6.6; on
    2.4.0 a resumed run validates once more): a Lightning that renames one fails here, instead of silently
    skipping our override."""
    import inspect

    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from odeon_job.outputs.callbacks.checkpoints import ExportingCheckpoint, LastCheckpoint
    from odeon_job.outputs.callbacks.early_stopping import ReportingEarlyStopping

    overrides = {
        (ModelCheckpoint, ExportingCheckpoint, "_save_checkpoint"): ["self", "trainer", "filepath"],
        (ModelCheckpoint, LastCheckpoint, "_save_checkpoint"): ["self", "trainer", "filepath"],
        (ModelCheckpoint, ExportingCheckpoint, "_should_remove_checkpoint"): ["self", "trainer", "previous", "current"],
        (ModelCheckpoint, ExportingCheckpoint, "_remove_checkpoint"): ["self", "trainer", "filepath"],
        (EarlyStopping, ReportingEarlyStopping, "_evaluate_stopping_criteria"): ["self", "current"],
    }
    for (base, ours, name), parameters in overrides.items():
        assert list(inspect.signature(getattr(base, name)).parameters) == parameters, f"Lightning's {name}"
        assert list(inspect.signature(getattr(ours, name)).parameters) == parameters, f"our {name}"
        assert getattr(ours, name) is not getattr(base, name)
    # EpochOrder re-seeds the iterator Lightning made before set_epoch on resume (it warns where there is none).
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert hasattr(trainer.fit_loop, "_data_fetcher")
