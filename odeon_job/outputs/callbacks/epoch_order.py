"""Keeps the training order a function of the epoch when a run resumes.

Lightning makes the training iterator before telling the sampler the epoch, and makes it again after
``set_epoch`` for every epoch but the one a resumed run starts with. With DataLoader workers, the
first iterator has already drawn its samples (prefetching), so that epoch would be trained in the
order, and with the augmentations, of another. When the sampler was iterated for an epoch other
than the current one, the iterator is made again.
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl

from odeon_job.data.sampler import EpochShuffleSampler

log = logging.getLogger("odeon")


class EpochOrder(pl.Callback):
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader = trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        if not isinstance(sampler, EpochShuffleSampler) or sampler.iterated_epoch in (None, sampler.epoch):
            return
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)  # Lightning 2.x
        if fetcher is None:
            log.warning(
                "resume: this Lightning version hides its data iterator; epoch %d may be trained in the "
                "order of epoch %d",
                sampler.epoch,
                sampler.iterated_epoch,
            )
            return
        iter(fetcher)  # a new iterator: the sampler draws the current epoch's order
