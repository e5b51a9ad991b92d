"""Samplers whose order depends only on the seed and the epoch, sharded across DDP processes.

Training: every epoch a new permutation drawn from ``(seed, epoch)``, split between processes (each
sample once per epoch; the last few are repeated to give every process as many, as PyTorch's
DistributedSampler does). Each item is ``(index, epoch)``, so the dataset can seed a sample's
augmentations from ``(seed, epoch, index)``: a run gives the same batches and augmentations
whatever the number of DataLoader workers, and a resumed run the same as one never interrupted.

Validation and test: each process takes every ``world_size``-th item in order, without repetition, so
every item counts exactly once in the confusion matrix; where predictions of scenes are stitched, each
process takes whole scenes instead (every ``world_size``-th), so that one process writes each scene.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def process_group() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    def __init__(self, length: int, seed: int) -> None:
        self.length, self.seed, self.epoch = length, seed, 0
        #: The epoch of the last iteration: a DataLoader with workers iterates as soon as its iterator is
        #: made, which Lightning does before set_epoch when it resumes (see callbacks/epoch_order.py).
        self.iterated_epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return items_per_process(self.length, process_group()[1])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        self.iterated_epoch = self.epoch
        rank, world = process_group()
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator)
        total = items_per_process(self.length, world) * world
        order = order.repeat(math.ceil(total / self.length))[:total]  # repeat a few so all processes have as many
        # One int64 per item, not a Python tuple: an epoch of a million windows of scenes costs 8 MB, not 100.
        return self._items(order[rank::world].numpy(), self.epoch)

    @staticmethod
    def _items(order: np.ndarray, epoch: int) -> Iterator[tuple[int, int]]:
        for index in order:
            yield int(index), epoch


class ShardSampler(Sampler[int]):
    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        rank, world = process_group()
        return len(range(rank, self.length, world))

    def __iter__(self) -> Iterator[int]:
        rank, world = process_group()
        return iter(range(rank, self.length, world))


class GroupShardSampler(Sampler[int]):
    """Each process takes every ``world_size``-th group of items (a scene's windows), each item once."""

    def __init__(self, groups: Sequence[range]) -> None:
        self.groups = groups

    def mine(self) -> Sequence[range]:
        """This process's groups (once the process group is up: before, all of them)."""
        rank, world = process_group()
        return self.groups[rank::world]

    def __len__(self) -> int:
        return sum(len(group) for group in self.mine())

    def __iter__(self) -> Iterator[int]:
        return (index for group in self.mine() for index in group)


def items_per_process(length: int, world_size: int) -> int:
    """Training items each process takes an epoch (the last few repeated so that every process has as many)."""
    return math.ceil(length / world_size)


def training_batches(length: int, batch_size: int, world_size: int) -> int:
    """Training batches each process runs an epoch, as the train loader makes them from ``length`` items."""
    per_process = items_per_process(length, world_size)
    if last_batch_is_single(per_process, batch_size):
        return per_process // batch_size
    return math.ceil(per_process / batch_size)


def last_batch_is_single(samples: int, batch_size: int) -> bool:
    """Whether an epoch's last training batch would hold one sample: batch norm cannot train on one
    sample where a feature map is 1x1, so that batch is dropped (a different sample each epoch, since
    the order is shuffled)."""
    return samples > batch_size and samples % batch_size == 1
