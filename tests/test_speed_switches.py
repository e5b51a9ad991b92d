"""The speed switches reach the Trainer, the model and the DataLoaders (their effect is in BENCHMARKS.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from odeon_job.config import config_from_dict
from odeon_job.data.datamodule import SegmentationDataModule
from odeon_job.data.samples import load_splits
from odeon_job.data.spec import describe_data
from odeon_job.errors import ConfigError
from odeon_job.tasks.preflight import check_precision
from odeon_job.tasks.train import train, trainer_options
from odeon_job.training.segmentation_module import SegmentationModule

from conftest import TinyDataset, make_config


def _module(config: dict, data: TinyDataset) -> SegmentationModule:
    job = config_from_dict(config)
    spec = describe_data(job.data_source, load_splits(job.data_source, 0).train[0])
    return SegmentationModule.from_config(job.model_dump(mode="json"), spec)


def test_precision_is_passed_on_and_checked(make_dataset: Callable[..., TinyDataset], tmp_path: Path) -> None:
    data = make_dataset(n=4)
    for given, expected in (
        (None, "32"),
        (32, "32"),
        ("32-true", "32"),
        ("bf16-mixed", "bf16-mixed"),
        ("16-mixed", "16-mixed"),
    ):
        setup = {} if given is None else {"precision": given}
        config = config_from_dict(make_config(data.csv, str(tmp_path), train_setup=setup))
        assert trainer_options(config, 4)["precision"] == expected
    with pytest.raises(ConfigError, match=r'train_setup.precision: "16-mixed" needs a GPU'):
        check_precision(config, "cpu")
    check_precision(config, "gpu")
    with pytest.raises(ConfigError, match="train_setup.precision: '64' is not one of 32, 16-mixed, bf16-mixed"):
        config_from_dict(make_config(data.csv, str(tmp_path), train_setup={"precision": "64"}))


def test_channels_last_and_compile_reach_the_model(make_dataset: Callable[..., TinyDataset], tmp_path: Path) -> None:
    data = make_dataset(n=4)
    plain = _module(make_config(data.csv, str(tmp_path)), data)
    last = _module(make_config(data.csv, str(tmp_path), train_setup={"channels_last": True}), data)
    compiled = _module(make_config(data.csv, str(tmp_path), train_setup={"compile": True}), data)

    def conv_weights(module: SegmentationModule) -> list[torch.Tensor]:
        return [p for p in module.model.parameters() if p.dim() == 4 and min(p.shape[2:]) > 1]

    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(last))
    assert not all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(plain))
    assert isinstance(compiled.network, torch._dynamo.eval_frame.OptimizedModule)
    assert plain.network is plain.model
    # Checkpoints hold the network's own parameter names, compiled or not.
    assert list(compiled.state_dict()) == list(plain.state_dict())


def test_the_bf16_validation_loss_is_the_full_precision_one_within_bf16_s_precision(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    """The same weights validated in full precision and in bf16 (channels last too) report the same loss and
    nearly the same confusion matrix: the sums behind them stay float64 whatever the network computes in."""
    data = make_dataset(n=8, size=64)
    config = make_config(data.csv, str(tmp_path), train_setup={"channels_last": True})
    job = config_from_dict(config)
    splits = load_splits(job.data_source, 0)
    spec = describe_data(job.data_source, splits.train[0])
    torch.manual_seed(0)  # the same weights every run: measured 0.28 % apart (1.2735 vs 1.2771)
    module = SegmentationModule.from_config(job.model_dump(mode="json"), spec)
    datamodule = SegmentationDataModule(splits, spec, job.data_source, 2, 0, False)
    losses, matrices = {}, {}
    for precision in ("32", "bf16-mixed"):
        trainer = pl.Trainer(
            accelerator="cpu",
            precision=precision,  # type: ignore[arg-type]
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        losses[precision] = trainer.validate(module, datamodule=datamodule, verbose=False)[0]["val_loss"]
        matrices[precision] = module.evaluation["val"].confusion.clone()
    full, half = losses["32"], losses["bf16-mixed"]
    assert full > 0 and abs(half - full) / full < 0.02, losses
    assert matrices["32"].sum() == matrices["bf16-mixed"].sum() == 2 * 64 * 64
    agreement = matrices["32"].diagonal().sum() / matrices["32"].sum()
    assert abs(matrices["bf16-mixed"].diagonal().sum() / matrices["32"].sum() - agreement) < 0.02


@pytest.mark.slow
def test_a_bf16_channels_last_training_runs_on_the_cpu(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    data = make_dataset(n=4)
    config = make_config(
        data.csv,
        str(tmp_path),
        train_setup={"precision": "bf16-mixed", "channels_last": True},
        output_setup={"use_tensorboard": False},
    )
    result = train(config_from_dict(config))
    assert result.final["loss"] > 0


def test_dataloader_settings(make_dataset: Callable[..., TinyDataset], tmp_path: Path) -> None:
    data = make_dataset(n=4)

    def loader(**device: object) -> torch.utils.data.DataLoader:
        job = config_from_dict(make_config(data.csv, str(tmp_path), device_setup=device))
        splits = load_splits(job.data_source, 0)
        spec = describe_data(job.data_source, splits.train[0])
        setup = job.device_setup
        return SegmentationDataModule(
            splits,
            spec,
            job.data_source,
            2,
            setup.num_workers,
            setup.pin_memory or False,
            persistent_workers=setup.persistent_workers,
            prefetch_factor=setup.prefetch_factor,
        ).train_dataloader()

    default = loader(num_workers=2)
    assert default.persistent_workers and default.prefetch_factor == 2 and not default.pin_memory
    tuned = loader(num_workers=2, persistent_workers=False, prefetch_factor=6, pin_memory=True)
    assert not tuned.persistent_workers and tuned.prefetch_factor == 6 and tuned.pin_memory
    assert not loader(num_workers=0).persistent_workers
    with pytest.raises(ConfigError, match="device_setup.prefetch_factor: needs num_workers > 0"):
        config_from_dict(make_config(data.csv, str(tmp_path), device_setup={"num_workers": 0, "prefetch_factor": 4}))


def test_tiles_travel_raw_and_are_scaled_on_the_device_with_each_split_s_statistics(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    """uint8 tiles leave the DataLoader; training, validation (sanity check included) and test steps
    see them scaled with their own split's statistics."""
    import pytorch_lightning as pl

    data = make_dataset(n=4)
    stats = {split: {"mean": [m] * 3, "std": [0.5] * 3} for split, m in (("train", 0.1), ("val", 0.2), ("test", 0.3))}
    job = config_from_dict(
        make_config(
            data.csv,
            str(tmp_path),
            data_source={"percentage_val": 0.5, "test_file": data.csv, "normalization_weights": stats},
        )
    )
    splits = load_splits(job.data_source, 0)
    spec = describe_data(job.data_source, splits.train[0])
    datamodule = SegmentationDataModule(splits, spec, job.data_source, 2, 0)
    assert next(iter(datamodule.train_dataloader()))["image"].dtype == torch.uint8
    seen: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    class Recording(SegmentationModule):
        def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
            raw = batch["image"].clone()
            batch = super().on_after_batch_transfer(batch, dataloader_idx)
            seen.append((self._running_split(), raw, batch["image"]))
            return batch

    module = Recording.from_config(job.model_dump(mode="json"), spec)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=datamodule)
    trainer.test(module, datamodule=datamodule, verbose=False)
    assert [split for split, _, _ in seen] == ["val", "train", "val", "test", "test"]  # sanity check first
    for split, raw, image in seen:
        assert raw.dtype == torch.uint8 and image.dtype == torch.float32
        expected = (raw.float() / 255 - stats[split]["mean"][0]) / 0.5
        assert torch.allclose(image, expected, atol=1e-5), split
