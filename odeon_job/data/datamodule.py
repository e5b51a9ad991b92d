"""The LightningDataModule: one dataset and DataLoader per split.

Under DDP, Lightning swaps in a DistributedSampler, so each process sees its own shard, reshuffled
every epoch.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from odeon_job.config import DataSource
from odeon_job.data.dataset import SegmentationDataset
from odeon_job.data.samples import Splits
from odeon_job.data.spec import DataSpec
from odeon_job.data.transforms import build_transform


class SegmentationDataModule(pl.LightningDataModule):
    def __init__(self, splits: Splits, spec: DataSpec, source: DataSource, batch_size: int,
                 num_workers: int, pin_memory: bool = False) -> None:
        super().__init__()
        self.datasets = {
            split: SegmentationDataset(samples, spec, split, build_transform(split, source))
            for split, samples in splits.items() if samples
        }
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory

    def check_first_samples(self) -> None:
        """Read the first sample of every split now, so a wrong band or size fails before training."""
        for dataset in self.datasets.values():
            dataset[0]

    def _loader(self, split: str, shuffle: bool, drop_last: bool = False) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=self.pin_memory, drop_last=drop_last)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, drop_last=self.last_batch_is_single())

    def last_batch_is_single(self) -> bool:
        """Whether an epoch's last training batch (per process) would hold one sample: batch norm cannot
        train on one sample where a feature map is 1x1, so that batch is dropped (a different sample
        each epoch, since the order is shuffled)."""
        world_size = self.trainer.world_size if self.trainer is not None else 1
        per_process = math.ceil(len(self.datasets["train"]) / world_size)  # DistributedSampler pads
        return per_process > self.batch_size and per_process % self.batch_size == 1

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    @property
    def has_test(self) -> bool:
        return "test" in self.datasets
