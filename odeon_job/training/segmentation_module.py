"""The LightningModule: a segmentation network, its loss, optimizer and evaluation.

Its hyperparameters are plain values (model, bands, classes, loss, optimizer, scheduler, per-split
scaling, and the whole configuration as a JSON string for the record), so a checkpoint rebuilds the model
by itself and loads with ``weights_only=True`` (:func:`load_module`).

Each validation or test run ends with an :class:`Evaluation` in ``module.evaluation[split]``: the mean
loss, the confusion matrix and every figure of ``metrics.py``, all synchronised across processes.
Callbacks (history, pictures, checkpoints) read it there; its numbers are also logged, so any Lightning
logger records them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import pytorch_lightning as pl
import torch
from torchmetrics import SumMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from odeon_job.config import (
    CONFIG_VERSION,
    SPLITS,
    DataSource,
    LossParams,
    ModelParams,
    OptimizerConfig,
    SchedulerConfig,
    TrainSetup,
    catalog,
    upgrade_config,
)
from odeon_job.config.colors import class_colors as class_colors_of
from odeon_job.data.masks import IGNORE_INDEX, as_long_classes
from odeon_job.data.spec import DataSpec
from odeon_job.data.transforms import InputScaling, scaling_arguments
from odeon_job.errors import ConfigError
from odeon_job.storage.model_files import load_plain
from odeon_job.training.evaluation import Evaluation
from odeon_job.training.losses import build_loss
from odeon_job.training.metrics import Sums, confusion_metrics
from odeon_job.training.models import build_model
from odeon_job.training.optimizers import build_optimizer, build_scheduler
from odeon_job.training.plots import SAMPLE_TILES, ShownTile

if TYPE_CHECKING:
    from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig

#: Losses whose classes compete (softmax); the others score each class on its own (sigmoid).
SOFTMAX_LOSSES = tuple(name for name, loss in catalog.LOSSES.items() if loss.softmax)


class NonFiniteLoss(Exception):
    """The training loss was NaN or infinite: raised before the step's backward pass.

    ``indices``: the samples of this process's batch (of the train dataset); ``here``: whether this
    process's loss was the non-finite one (under DDP, another process's may have been)."""

    def __init__(self, epoch: int, step: int, indices: list[int], here: bool = True) -> None:
        super().__init__(f"non-finite training loss at epoch {epoch}, step {step}")
        self.epoch, self.step, self.indices, self.here = epoch, step, indices, here


class SplitSums(torch.nn.Module):
    """What an evaluated split adds up over its batches (and, under DDP, its processes): the confusion matrix, the
    loss's sums over pixels (the split's loss is that of all its scored pixels at once; a NaN stays NaN: null in
    the history) and the pixels of no class (IGNORE_INDEX), left out of both and counted."""

    def __init__(self, n_classes: int, loss_sums: int) -> None:
        super().__init__()
        self.confusion = MulticlassConfusionMatrix(num_classes=n_classes, ignore_index=IGNORE_INDEX)
        self.loss_sums = Sums(loss_sums)
        self.ignored = SumMetric()

    def reset(self) -> None:
        for metric in (self.confusion, self.loss_sums, self.ignored):
            metric.reset()


class SegmentationModule(pl.LightningModule):
    """Its hyperparameters, saved in every checkpoint, are plain values (numbers, strings, lists, dicts):
    a checkpoint loads with ``torch.load(..., weights_only=True)`` and rebuilds the model by itself
    (``SegmentationModule.load_from_checkpoint(path)``, or :func:`load_module` for any version's file).
    ``config_json`` is the run's whole configuration (URLs redacted), for the record: the module does not read it
    back (the ``.pth`` mode's ``<name>-train.pth`` carries it, see ``BestPthFiles``)."""

    #: The network as it runs (torch.compile's wrapper, or the network): kept out of the module's children.
    network: Callable[[torch.Tensor], torch.Tensor]

    def __init__(
        self,
        model_name: str,
        in_channels: int,
        class_labels: list[str],
        model_params: dict[str, Any] | None = None,
        loss: str = "ce",
        loss_params: dict[str, Any] | None = None,
        class_weights: list[float] | None = None,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        lr: float = 0.001,
        epochs: int = 1000,
        input_scaling: dict[str, dict[str, Any]] | None = None,
        channels_last: bool = False,
        compile: bool = False,
        config_version: int = CONFIG_VERSION,
        config_json: str | None = None,
        class_colors: list[str] | None = None,
    ) -> None:
        super().__init__()
        if config_version > CONFIG_VERSION:
            raise ConfigError(
                f"the checkpoint was written by a later version of odeon-job (config_version "
                f"{config_version}, this one reads up to {CONFIG_VERSION}): upgrade odeon-job"
            )
        self.save_hyperparameters()
        self.class_labels = tuple(class_labels)
        #: "#rrggbb" per class (checkpoints written before colours existed get the default palette).
        self.class_colors = tuple(class_colors_of(class_colors, len(class_labels)))
        self.in_channels, self.loss_name, self.channels_last = in_channels, loss, channels_last
        self.optimizer_config = OptimizerConfig.model_validate(optimizer) if optimizer else None
        self.scheduler_config = SchedulerConfig.model_validate(scheduler) if scheduler else None
        self.lr, self.epochs = lr, epochs
        self.model = build_model(
            model_name, in_channels, self.n_classes, ModelParams.model_validate(model_params or {})
        )
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # torch.compile's wrapper, kept out of the module's children so that checkpoints hold the
        # network's own parameter names; compiled lazily, at the first step.
        object.__setattr__(self, "network", torch.compile(self.model) if compile else self.model)
        # Each split's images may have statistics of their own (data_source.normalization_weights).
        # (A list in SPLITS order: a ModuleDict cannot have a key named "train", Module.train's name.)
        scalings = input_scaling or {}
        self.input_scalings = torch.nn.ModuleList(
            InputScaling(**scalings.get(split, {"scale": 255.0})) for split in SPLITS
        )
        self.criterion = build_loss(loss, class_weights, LossParams.model_validate(loss_params or {}))
        # Per evaluated split, summed over batches and (under DDP) processes.
        sums = self.criterion.sums_size(self.n_classes)
        self.val_sums, self.test_sums = SplitSums(self.n_classes, sums), SplitSums(self.n_classes, sums)
        #: The training batches' predictions, for the train run's figures (as the batches pass: no extra pass).
        #: No argument checks at every step (3x the update's time, and host syncs on a GPU): the predictions
        #: are an argmax and the masks were checked when read (class values, ignored pixels).
        self.train_confusion = MulticlassConfusionMatrix(
            num_classes=self.n_classes, ignore_index=IGNORE_INDEX, validate_args=False
        )
        #: The loss's sums over the training pixels of the epoch.
        self.train_loss_sums = Sums(sums)
        self.evaluation: dict[str, Evaluation] = {}
        self.samples: dict[str, list[ShownTile]] = {"val": [], "test": []}
        #: Each epoch's mean training loss (epoch → loss), for the training curves.
        self.train_losses: dict[int, float] = {}
        #: The type of the tiles as read (uint8...), seen in the batches.
        self.raw_image_dtype = torch.float32
        #: The learning rate and momentum of the last training step (None before the first).
        self.lr_used: float | None = None
        self.momentum_used: float | None = None

    @property
    def n_classes(self) -> int:
        return len(self.class_labels)

    def split_sums(self, split: str) -> SplitSums:
        """The sums of the evaluated split ``split`` ("val" or "test")."""
        return self.val_sums if split == "val" else self.test_sums

    @classmethod
    def from_config(cls, config: dict[str, Any], spec: DataSpec) -> SegmentationModule:
        """The module a configuration (as JSON values) and the data description ask for."""
        return cls(**module_arguments(config, spec))

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        """Images and masks travel from the DataLoader workers in their small raw types (uint8 tiles,
        uint8 class indices): here, on the device, images are scaled and normalised for the split
        being run, and masks become the int64 that the loss and metrics want."""
        self.raw_image_dtype = batch["image"].dtype  # what the MLflow model of raw pixels takes
        batch["image"] = self.scale_images(batch["image"], self._running_split())
        if "mask" in batch:  # (images to predict have none)
            batch["mask"] = as_long_classes(batch["mask"])
        return batch

    def scale_images(self, images: torch.Tensor, split: str) -> torch.Tensor:
        """Raw images (as the dataset gives them) → the network's input, with ``split``'s statistics."""
        return self.scaling(split)(images.to(self.device))

    def scaling(self, split: str) -> InputScaling:
        # (a ModuleList types its items as Module; they are the InputScaling built in __init__, in SPLITS order)
        return cast(InputScaling, self.input_scalings[SPLITS.index(split)])

    def _running_split(self) -> str:
        trainer = self.trainer
        if trainer.testing or trainer.predicting:  # new images are read as the test split was
            return "test"
        return "val" if trainer.validating or trainer.sanity_checking else "train"

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return self.network(image)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-class probabilities: softmax for ce and focal, a sigmoid per class for bce and combo."""
        return logits.softmax(dim=1) if self.loss_name in SOFTMAX_LOSSES else logits.sigmoid()

    def predicted_classes(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, H, W) classes: the first class of highest probability, the rule of every prediction written
        (``predicted_class``), so metrics and written maps agree even where probabilities tie (logits that differ
        by less than float32 can tell once through a softmax, or sigmoids saturated at 1)."""
        return self.probabilities(logits).argmax(dim=1)

    def on_train_epoch_end(self) -> None:
        state = self._at_global_step()
        if self.train_loss_sums.update_count:  # the loss of the epoch's pixels (all processes)
            loss = self.criterion.from_sums(self.train_loss_sums.compute())
            self.train_losses[self.current_epoch] = float(loss)
            state["train_loss_epoch"] = loss
        self.train_loss_sums.reset()
        # The spec's "metrics" for the training too: the scores of the epoch's batches (the model changing
        # as it trains, so a trend, not an evaluation).
        # (None when no batch was trained here: a run resumed from the end of an epoch finishes it empty.)
        if self.train_confusion.update_count:
            scores = confusion_metrics(self.train_confusion.compute().cpu(), self.class_labels)
            state.update(
                {
                    f"train/{name}": torch.tensor(value, dtype=torch.float64)
                    for name, value in scores.items()
                    if value is not None
                }
            )
        self.train_confusion.reset()
        if self.lr_used is not None:  # what the epoch trained with
            state["train/learning rate"] = torch.tensor(self.lr_used, dtype=torch.float64)
            if self.momentum_used is not None:
                state["train/momentum"] = torch.tensor(self.momentum_used, dtype=torch.float64)
        self.log_dict(state, sync_dist=True)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Remember the learning rate (and momentum) this step trains with, for history and loggers."""
        group = self.trainer.optimizers[0].param_groups[0]
        self.lr_used = float(group["lr"])
        momentum = group.get("momentum", group.get("betas", (None,))[0])
        self.momentum_used = float(momentum) if momentum is not None else None

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        sums = self.criterion.sums(logits, batch["mask"])
        loss = self.criterion.from_sums(sums)
        self._check_finite(loss, batch)
        self.train_loss_sums.update(sums)
        self.train_confusion.update(self.predicted_classes(logits.detach()), batch["mask"])
        self.log("train_loss", loss, on_step=True, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def train_loss_so_far(self) -> float | None:
        """The loss of this process's training pixels of the epoch so far (None before its first batch): for the
        console, without waiting on the other processes."""
        sums = self.train_loss_sums
        return float(self.criterion.from_sums(sums.total)) if sums.update_count else None

    def _check_finite(self, loss: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Stop before a NaN or infinite loss reaches the weights (every later figure would be NaN).

        One host-device sync per step; under DDP all processes decide together (a process stopping alone
        would leave the others waiting for it in the gradient all-reduce)."""
        bad = not bool(torch.isfinite(loss))
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise NonFiniteLoss(
                self.current_epoch, self.global_step, batch["index"].tolist(), here=not bool(torch.isfinite(loss))
            )

    def _evaluate(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        logits = self(batch["image"])
        totals = self.split_sums(split)
        totals.loss_sums.update(self.criterion.sums(logits, batch["mask"]))
        totals.confusion.update(self.predicted_classes(logits), batch["mask"])
        # Batches of tiles of mixed sizes are padded with ignored pixels: those are not the data's.
        # (So are the pixels of a grid window that its neighbour owns: ``owned`` counts the window's own.)
        padding: torch.Tensor | int
        if "owned" in batch:
            padding = batch["mask"].numel() - batch["owned"].sum()
        else:
            padding = batch["mask"].numel() - batch["shape"].prod(dim=1).sum() if "shape" in batch else 0
        totals.ignored.update((batch["mask"] == IGNORE_INDEX).sum() - padding)
        self._keep_samples(batch, logits, split)
        return logits

    def _keep_samples(self, batch: dict[str, torch.Tensor], logits: torch.Tensor, split: str) -> None:
        """Keep the first tiles of the run for pictures, from the batch already on the device (a few
        small copies to the CPU, for the first batches only)."""
        kept = self.samples[split]
        count = min(SAMPLE_TILES - len(kept), len(batch["image"]))
        if count <= 0:
            return
        images = self.scaling(split).unit_from_input(batch["image"][:count].detach()).float().cpu()
        images = images[:, :3] if images.shape[1] >= 3 else images[:, :1].repeat(1, 3, 1, 1)
        truths, predictions = batch["mask"][:count].cpu(), self.predicted_classes(logits[:count]).cpu()
        shapes = batch["shape"][:count].tolist() if "shape" in batch else [None] * count
        for image, truth, prediction, shape in zip(images, truths, predictions, shapes, strict=True):
            height, width = shape if shape is not None else truth.shape
            kept.append(ShownTile(image[:, :height, :width], truth[:height, :width], prediction[:height, :width]))

    def _close_evaluation(self, split: str) -> None:
        totals = self.split_sums(split)
        confusion = totals.confusion.compute().cpu()
        loss = self.criterion.from_sums(totals.loss_sums.compute())
        evaluation = Evaluation(
            loss=float(loss),
            confusion=confusion,
            metrics=confusion_metrics(confusion, self.class_labels),
            ignored=int(totals.ignored.compute()),
            samples=self.samples[split],
            epoch=self.current_epoch + 1 if split == "val" else None,
        )
        self.samples[split] = []
        totals.reset()
        self.evaluation[split] = evaluation
        # Already synchronised: sync_dist only keeps Lightning from warning (a mean of equal values).
        self.log(f"{split}_loss", evaluation.loss, prog_bar=True, sync_dist=True)
        self.log(f"{split}_miou", evaluation.miou, prog_bar=True, sync_dist=True)
        # Every figure of the entry reaches every logger through Lightning (val/loss, val/Average/IoU...).
        # (float64 tensors: Lightning would keep a number as float32, and the loggers' figures must be the
        # history's to the last digit.)
        shown = {
            name: value
            for name, value in evaluation.entry().items()
            if not name.startswith("cm_") and value is not None
        }
        self.log_dict(
            {
                **{f"{split}/{name}": torch.tensor(float(value), dtype=torch.float64) for name, value in shown.items()},
                **self._at_global_step(),
            },
            sync_dist=True,
        )

    def _at_global_step(self) -> dict[str, torch.Tensor]:
        """Lightning logs epoch-end figures at its count of optimizer steps before the last one; a ``step``
        value makes the loggers show them at the training's global step, where the curves of train, val and
        test line up (and where the pictures are)."""
        return {"step": torch.tensor(float(self.global_step), dtype=torch.float64)}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._close_evaluation("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"logits": self._evaluate(batch, "test")}

    def on_test_epoch_end(self) -> None:
        self._close_evaluation("test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """The logits of a batch of images (``odeon predict``: the stitcher turns them into maps)."""
        return self(batch["image"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["config_version"] = CONFIG_VERSION

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        optimizer = build_optimizer(self.parameters(), self.optimizer_config, self.lr)
        return {
            "optimizer": optimizer,
            "lr_scheduler": build_scheduler(optimizer, self.scheduler_config, self.lr, self.epochs),
        }


def segmentation_module(module: pl.LightningModule) -> SegmentationModule:
    """``module`` as this job's LightningModule: Lightning hands callbacks its base type."""
    if not isinstance(module, SegmentationModule):
        raise TypeError(f"a {type(module).__name__}, not the job's SegmentationModule")
    return module


def module_arguments(config: dict[str, Any], spec: DataSpec | dict[str, Any]) -> dict[str, Any]:
    """The module's plain arguments from a configuration (as JSON values) and the data description: all
    that a checkpoint needs to rebuild the model, nothing that needs a class of ours to load."""
    config = upgrade_config(config, "the checkpoint's configuration")
    spec = spec if isinstance(spec, DataSpec) else DataSpec.from_dict(spec)
    setup = TrainSetup.model_validate(config["train_setup"])
    source = DataSource.model_validate(config["data_source"])
    scaling = {split: scaling_arguments(split, source, spec.pixel_scale) for split in SPLITS}
    return {
        "model_name": setup.model_name,
        "in_channels": spec.in_channels,
        "class_labels": list(spec.class_labels),
        "model_params": setup.model_params.model_dump(mode="json"),
        "loss": setup.loss,
        "loss_params": setup.loss_params.model_dump(mode="json"),
        "class_weights": setup.class_imbalance,
        "optimizer": setup.optimizer_config.model_dump(mode="json") if setup.optimizer_config else None,
        "scheduler": setup.scheduler_config.model_dump(mode="json") if setup.scheduler_config else None,
        "lr": setup.learning_rate,
        "epochs": setup.epochs,
        "input_scaling": scaling,
        "channels_last": setup.channels_last,
        "compile": setup.compile,
        "config_version": CONFIG_VERSION,
        "config_json": json.dumps(config, sort_keys=True),
        "class_colors": class_colors_of(source.class_colors, spec.n_classes),
    }


def upgrade_hyperparameters(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's hyperparameters as this version's module takes them. Checkpoints written before the
    module took plain arguments hold the whole configuration and data description instead."""
    if set(hyperparameters) == {"config", "data_spec"}:
        return module_arguments(hyperparameters["config"], hyperparameters["data_spec"])
    return hyperparameters


def load_module(url: str, map_location: Any = "cpu") -> SegmentationModule:
    """The module of the checkpoint at ``url`` (local or remote, any version), weights loaded, in eval mode;
    loaded with weights_only=True: nothing in the file runs."""

    checkpoint = load_plain(url, map_location=map_location)
    module = SegmentationModule(**upgrade_hyperparameters(dict(checkpoint["hyper_parameters"])))
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()
