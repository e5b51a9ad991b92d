"""The LightningDataModule: one dataset and DataLoader per split.

Our samplers (``sampler.py``) shard the data between DDP processes themselves, so the Trainer runs
with ``use_distributed_sampler=False``.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler, default_collate

from odeon_job.config import DataSource
from odeon_job.data.dataset import SegmentationDataset
from odeon_job.data.masks import ignore_value
from odeon_job.data.sampler import EpochShuffleSampler, GroupShardSampler, ShardSampler, last_batch_is_single
from odeon_job.data.samples import Splits
from odeon_job.data.spec import DataSpec
from odeon_job.data.transforms import build_transform
from odeon_job.data.windows import GridWindows, WindowPlan


class PadToLargest:
    """Collate samples into a batch; tiles of different sizes are padded (bottom and right) to the largest
    of the batch, images with 0 and masks with the ignore marker, so padding counts in no loss or metric (and the
    image's validity, where items have one, with False).
    Each item's ``shape`` keeps its own size (predictions are cropped back to it).

    ``at_least`` (height, width): windows of scenes are padded to the split's largest window whatever their batch,
    so that the prediction of a window of a scene smaller than the patch never depends on the windows it is
    batched with; never to more than the split's scenes hold (the networks pad to their stride themselves)."""

    def __init__(self, mask_ignore: int, at_least: tuple[int, int] = (0, 0)) -> None:
        self.mask_ignore, self.at_least = mask_ignore, at_least

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        height = max(self.at_least[0], *(item["image"].shape[-2] for item in items))
        width = max(self.at_least[1], *(item["image"].shape[-1] for item in items))
        if any(item["image"].shape[-2:] != (height, width) for item in items):
            items = [
                {
                    **item,
                    "image": _pad(item["image"], height, width, 0),
                    **({"mask": _pad(item["mask"], height, width, self.mask_ignore)} if "mask" in item else {}),
                    **({"valid": _pad(item["valid"], height, width, False)} if "valid" in item else {}),
                }
                for item in items
            ]
        return default_collate(items)


def _pad(tensor: torch.Tensor, height: int, width: int, value: int) -> torch.Tensor:
    return F.pad(tensor, (0, width - tensor.shape[-1], 0, height - tensor.shape[-2]), value=value)


class SegmentationDataModule(pl.LightningDataModule):
    def __init__(
        self,
        splits: Splits,
        spec: DataSpec,
        source: DataSource,
        batch_size: int,
        num_workers: int,
        pin_memory: bool = False,
        seed: int = 0,
        persistent_workers: bool | None = None,
        prefetch_factor: int | None = None,
        windows: dict[str, WindowPlan] | None = None,
        test_by_scene: bool = False,
    ) -> None:
        super().__init__()
        windows = windows or {}
        self.datasets = {
            split: SegmentationDataset(
                samples, spec, split, build_transform(split, source, spec.pixel_scale), seed, windows.get(split)
            )
            for split, samples in splits.items()
            if samples
        }
        #: Test windows sharded by scene (each process stitches the scenes it predicts).
        self.test_by_scene = test_by_scene
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = num_workers > 0 if persistent_workers is None else persistent_workers
        self.prefetch_factor = prefetch_factor

    def check_first_samples(self) -> dict[str, dict[str, Any]]:
        """Read the first sample of every split now, so a wrong band or size fails before training; returns
        them by split."""
        return {split: dataset[0] for split, dataset in self.datasets.items()}

    def _loader(self, split: str, sampler: Sampler, drop_last: bool = False) -> DataLoader:
        dataset = self.datasets[split]
        collate = PadToLargest(ignore_value(dataset.spec.n_classes), dataset.windows.largest)
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor,
            pin_memory=self.pin_memory,
            drop_last=drop_last,
        )

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffleSampler(len(self.datasets["train"]), self.seed)
        return self._loader("train", sampler, drop_last=last_batch_is_single(len(sampler), self.batch_size))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", ShardSampler(len(self.datasets["val"])))

    def test_dataloader(self) -> DataLoader:
        dataset = self.datasets["test"]
        if self.test_by_scene and isinstance(dataset.windows, GridWindows):
            return self._loader(
                "test", GroupShardSampler([dataset.windows.items_of_row(row) for row in range(len(dataset.samples))])
            )
        return self._loader("test", ShardSampler(len(dataset)))

    @property
    def has_test(self) -> bool:
        return "test" in self.datasets
