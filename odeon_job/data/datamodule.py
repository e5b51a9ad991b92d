"""The LightningDataModule: one dataset and DataLoader per split.

Our samplers (``sampler.py``) shard the data between DDP processes themselves, so the Trainer runs
with ``use_distributed_sampler=False``.
"""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Sampler

from odeon_job.config import DataSource
from odeon_job.data.dataset import SegmentationDataset
from odeon_job.data.sampler import EpochShuffleSampler, ShardSampler
from odeon_job.data.samples import Splits
from odeon_job.data.spec import DataSpec
from odeon_job.data.transforms import build_transform


def last_batch_is_single(samples: int, batch_size: int) -> bool:
    """Whether an epoch's last training batch would hold one sample: batch norm cannot train on one
    sample where a feature map is 1x1, so that batch is dropped (a different sample each epoch, since
    the order is shuffled)."""
    return samples > batch_size and samples % batch_size == 1


class SegmentationDataModule(pl.LightningDataModule):
    def __init__(self, splits: Splits, spec: DataSpec, source: DataSource, batch_size: int,
                 num_workers: int, pin_memory: bool = False, seed: int = 0, persistent_workers: bool | None = None,
                 prefetch_factor: int | None = None) -> None:
        super().__init__()
        self.datasets = {
            split: SegmentationDataset(samples, spec, split, build_transform(split, source, spec.pixel_scale), seed)
            for split, samples in splits.items() if samples
        }
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = num_workers > 0 if persistent_workers is None else persistent_workers
        self.prefetch_factor = prefetch_factor

    def check_first_samples(self) -> None:
        """Read the first sample of every split now, so a wrong band or size fails before training."""
        for dataset in self.datasets.values():
            dataset[0]

    def _loader(self, split: str, sampler: Sampler, drop_last: bool = False) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.persistent_workers,
                          prefetch_factor=self.prefetch_factor, pin_memory=self.pin_memory, drop_last=drop_last)

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffleSampler(len(self.datasets["train"]), self.seed)
        return self._loader("train", sampler, drop_last=last_batch_is_single(len(sampler), self.batch_size))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", ShardSampler(len(self.datasets["val"])))

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", ShardSampler(len(self.datasets["test"])))

    @property
    def has_test(self) -> bool:
        return "test" in self.datasets
