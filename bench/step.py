"""Images per second of the real training (Trainer, datamodule, DataLoader workers) against a bare PyTorch loop.

    python bench/step.py [--models lightunet unet] [--steps 30 4] [--batch 8] [--workers 2] [--repeats 3]

Both sides train the same network with the same loss (cross-entropy with the demo's class weights) and
optimizer (Adam, lr 0.005) on batches of 8 tiles of 256 x 256 x 3, on every CPU core torch sees:

- ``odeon``: SegmentationModule + SegmentationDataModule (the demo's tiles, read from deflate GeoTIFFs by
  DataLoader workers with the demo's augmentation, scaled and normalised by the module) under a
  Lightning Trainer with validation, checkpoints, loggers and progress bars off;
- ``bare``: ``for step: zero_grad, forward, loss, backward, step`` on one in-memory batch.

Each side runs ``warm-up + steps`` steps; the time of the timed steps only (after the first batches,
with the workers started) gives images/s. Figures are medians of ``--repeats`` runs, alternating sides;
the ratio is the median of each run pair's ratio (the two measured back to back).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import pytorch_lightning as pl  # noqa: E402

from odeon_job.commands.demo import demo_config, write_dataset  # noqa: E402
from odeon_job.config import config_from_dict  # noqa: E402
from odeon_job.data.datamodule import SegmentationDataModule  # noqa: E402
from odeon_job.data.samples import load_splits  # noqa: E402
from odeon_job.data.spec import describe_data  # noqa: E402
from odeon_job.training.losses import build_loss  # noqa: E402
from odeon_job.training.models import build_model  # noqa: E402
from odeon_job.training.segmentation_module import SegmentationModule  # noqa: E402

WARMUP = 2


class StepTimer(pl.Callback):
    """Time from the start of step ``WARMUP`` to the end of the last step."""

    def __init__(self, last: int) -> None:
        self.last, self.start, self.end = last, 0.0, 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, index: int) -> None:
        if trainer.global_step == WARMUP:
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, index: int
    ) -> None:
        if trainer.global_step == self.last:
            self.end = time.perf_counter()


def odeon_rate(config: Any, steps: int, workers: int) -> float:
    splits = load_splits(config.data_source, 0)
    spec = describe_data(config.data_source, splits.train[0])
    datamodule = SegmentationDataModule(
        splits, spec, config.data_source, config.train_setup.batch_size, workers, seed=0
    )
    module = SegmentationModule.from_config(config.model_dump(mode="json"), spec)
    timer = StepTimer(WARMUP + steps)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=WARMUP + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=datamodule)
    return steps * config.train_setup.batch_size / (timer.end - timer.start)


def bare_rate(config: Any, steps: int) -> float:
    setup = config.train_setup
    torch.manual_seed(0)
    model = build_model(setup.model_name, 3, 5)
    criterion = build_loss(setup.loss, setup.class_imbalance, setup.loss_params)
    optimizer = torch.optim.Adam(model.parameters(), lr=setup.lr)
    image = torch.randn(setup.batch_size, 3, 256, 256)
    target = torch.randint(0, 5, (setup.batch_size, 256, 256))
    start = 0.0
    for step in range(WARMUP + steps):
        if step == WARMUP:
            start = time.perf_counter()
        optimizer.zero_grad()
        criterion(model(image), target).backward()
        optimizer.step()
    return steps * setup.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lightunet", "unet"])
    parser.add_argument("--steps", nargs="+", type=int, default=[30, 4], help="timed steps per model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pl.seed_everything(0, verbose=False)
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        # Enough tiles that the timed steps stay within one epoch (no epoch-end work in the figures).
        tiles = args.batch * (WARMUP + max(args.steps) + 1)
        dataset = write_dataset(os.path.join(folder, "data"), n_train=tiles, n_val=2, n_test=1)
        print(
            f"batch {args.batch} of 256 x 256 x 3, {args.workers} DataLoader workers, {torch.get_num_threads()} "
            f"torch threads, {os.cpu_count()} CPUs; median of {args.repeats} runs"
        )
        print("| model | odeon images/s | bare images/s | odeon ÷ bare |")
        print("|---|---:|---:|---:|")
        for name, steps in zip(args.models, args.steps, strict=True):
            raw = demo_config(dataset, os.path.join(folder, "out"))
            raw["train_setup"].update(model_name=name, batch_size=args.batch)
            config = config_from_dict(raw)
            odeon, bare = [], []
            for _ in range(args.repeats):
                odeon.append(odeon_rate(config, steps, args.workers))
                bare.append(bare_rate(config, steps))
            o, b = statistics.median(odeon), statistics.median(bare)
            paired = statistics.median(x / y for x, y in zip(odeon, bare, strict=True))
            print(f"| {name} | {o:.2f} | {b:.2f} | {paired:.3f} |", flush=True)


if __name__ == "__main__":
    main()
