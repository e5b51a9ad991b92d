"""The LightningModule: a segmentation network, its loss, optimizer and validation figures.

Its hyperparameters are the resolved configuration and the data spec, so a checkpoint rebuilds the
model by itself (``SegmentationModule.load_from_checkpoint(path)``).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from odeon_job.config import TrainSetup
from odeon_job.data.spec import DataSpec
from odeon_job.losses import build_loss
from odeon_job.metrics import mean_iou
from odeon_job.models import build_model
from odeon_job.optim import build_optimizer, build_scheduler


class SegmentationModule(pl.LightningModule):
    def __init__(self, config: dict[str, Any], data_spec: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_setup = TrainSetup.model_validate(config["train_setup"])
        self.spec = DataSpec.from_dict(data_spec)
        setup = self.train_setup
        self.model = build_model(setup.model_name, self.spec.in_channels, self.spec.n_classes, setup.model_params)
        self.criterion = build_loss(setup.loss, setup.class_imbalance, setup.loss_params)
        # One confusion matrix per evaluated split, summed over batches and (under DDP) processes.
        self.confusion = torch.nn.ModuleDict({
            split: MulticlassConfusionMatrix(num_classes=self.spec.n_classes) for split in ("val", "test")
        })

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.criterion(self(batch["image"]), batch["mask"])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def _evaluate(self, batch: dict[str, torch.Tensor], split: str) -> None:
        logits = self(batch["image"])
        loss = self.criterion(logits, batch["mask"])
        self.log(f"{split}_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=len(batch["image"]))
        self.confusion[split].update(logits.argmax(dim=1), batch["mask"])

    def _close_evaluation(self, split: str) -> None:
        confusion = self.confusion[split].compute()
        self.log(f"{split}_miou", mean_iou(confusion), prog_bar=True)
        self.confusion[split].reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._close_evaluation("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._close_evaluation("test")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.parameters(), self.train_setup.optimizer_config, self.train_setup.lr)
        return {"optimizer": optimizer, "lr_scheduler": build_scheduler(optimizer, self.train_setup)}
