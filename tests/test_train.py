from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from odeon_job import demo
from odeon_job.config import config_from_dict
from odeon_job.errors import ConfigError, DataError, OdeonError, one_line
from odeon_job.module import SegmentationModule
from odeon_job.run import TESTING_BATCHES, check_val_check_interval, train, trainer_options

from conftest import TinyDataset, make_config, onehot, write_tif

pytestmark = pytest.mark.slow


def test_two_epochs_write_the_run_folder(make_dataset: Callable[..., TinyDataset], tmp_path: Path) -> None:
    data = make_dataset(n=8)
    test = make_dataset(n=2, name="test", seed=1)
    out = tmp_path / "out"
    config = config_from_dict(make_config(data.csv, str(out), data_source={"test_file": test.csv},
                                          train_setup={"epochs": 2}, output_setup={"save_top_k": 1}))
    result = train(config)

    folder = out / "exp" / "v"
    assert result.run_folder == str(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert saved == config.model_dump(mode="json")
    history = json.loads((folder / "history_val.json").read_text())
    assert list(history) == ["0", "1"] and history == result.history
    for entry in history.values():
        assert set(entry) == {"loss", "Average/IoU", "learning rate"}
        assert entry["loss"] > 0 and 0 <= entry["Average/IoU"] <= 1 and entry["learning rate"] == 0.01
    loss_ckpts = set(os.listdir(folder / "odeon_val_loss_ckpt"))
    best = os.path.basename(result.best_checkpoint)
    assert loss_ckpts == {"last.ckpt", best}  # save_top_k 1, plus the last one for resuming
    assert best.startswith("lightunet-epoch=") and "-val_loss=" in best
    assert len(os.listdir(folder / "odeon_val_miou_ckpt")) == 1
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(folder / "tensorboard"))
    assert set(result.test) == {"test_loss", "test_miou"}

    # A checkpoint rebuilds its model by itself and predicts as the trained one.
    module = SegmentationModule.load_from_checkpoint(result.best_checkpoint, map_location="cpu").eval()
    assert module.hparams["config"]["train_setup"]["model_name"] == "lightunet"
    assert module.spec.class_labels == ("class 1", "class 2", "class 3")
    assert module(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_workers_augmentations_class_index_masks_and_determinism(make_dataset: Callable[..., TinyDataset],
                                                                 tmp_path: Path) -> None:
    data = make_dataset(n=6, encoding="class_index", n_classes=4)
    config = config_from_dict(make_config(
        data.csv, str(tmp_path / "out"),
        data_source={"mask_bands": [1], "class_labels": ["a", "b", "c", "d"],
                     "data_augmentation": {"train": ["rotation90", "rotation", "radiometry"]},
                     "normalization_weights": {"train": {"mean": [0.5] * 3, "std": [0.25] * 3}}},
        train_setup={"deterministic": True, "class_imbalance": [1, 2, 2, 0.5],
                     "optimizer_config": {"optimizer": "sgd", "momentum": 0.9}},
        output_setup={"use_tensorboard": False, "save_history": False},
        device_setup={"num_workers": 2}))
    result = train(config)
    assert np.isfinite(result.final["loss"])
    folder = Path(result.run_folder)
    assert not (folder / "history_val.json").exists() and not (folder / "tensorboard").exists()


def test_a_bad_row_read_in_a_worker_names_its_row(make_dataset: Callable[..., TinyDataset],
                                                  tmp_path: Path) -> None:
    data = make_dataset(n=4)
    write_tif(Path(data.masks[2]), onehot(np.zeros((16, 32), np.uint8), 3))  # row 3: mask of another size
    config = config_from_dict(make_config(data.csv, str(tmp_path / "out"), data_source={"val_file": data.csv},
                                          device_setup={"num_workers": 1}))
    with pytest.raises(DataError) as caught:
        train(config)
    assert one_line(caught.value) == (f"{data.csv} row 3: image {data.images[2]} is 32x32 pixels but mask "
                                      f"{data.masks[2]} is 32x16")
    # What was written before the failure stays: the resolved config.
    assert (tmp_path / "out" / "exp" / "v" / "config.json").exists()


def test_an_existing_run_folder_is_not_overwritten(make_dataset: Callable[..., TinyDataset],
                                                   tmp_path: Path) -> None:
    data = make_dataset(n=4)
    folder = tmp_path / "out" / "exp" / "v"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=f"output_setup.version_name: the run folder {folder} already exists"):
        train(config_from_dict(make_config(data.csv, str(tmp_path / "out"))))
    assert (folder / "config.json").read_text() == "{}"


@pytest.mark.parametrize(("section", "values", "key"), [
    ("output_setup", {"use_wandb": True}, "output_setup.use_wandb"),
    ("output_setup", {"get_prediction": True}, "output_setup.get_prediction"),
    ("output_setup", {"model_out_ext": ".pth"}, "output_setup.model_out_ext"),
    ("output_setup", {"model_filename": "model.pth"}, "output_setup.model_out_ext"),
    ("train_setup", {"export_checkpoint": ".pth"}, "train_setup.export_checkpoint"),
    ("train_setup", {"continue_training": True}, "train_setup.continue_training"),
    ("train_setup", {"scheduler_config": {"scheduler": "cosineannealingwarmrestarts"}},
     "train_setup.scheduler_config.T_0: cosineannealingwarmrestarts needs this argument"),
    ("train_setup", {"loss": "focal", "loss_params": {"alpha": [1, 2]}},
     "train_setup.loss_params.alpha: 2 weights but the masks have 3 classes"),
    ("train_setup", {"init_weights": "/nonexistent/w.pth"}, "/nonexistent/w.pth: not found"),
    ("train_setup", {"optimizer_config": {"optimizer": "adam", "momentum": 0.9}},
     "train_setup.optimizer_config.momentum: adam has no argument 'momentum'"),
    ("data_source", {"image_bands": [1, 2, 7]}, "data_source.image_bands asks for band 7"),
    ("data_source", {"class_labels": ["a", "b"]}, "data_source.class_labels has 2 labels but"),
    ("train_setup", {"class_imbalance": [1, 1]}, "train_setup.class_imbalance: 2 weights but the masks have 3"),
    ("train_setup", {"val_check_interval": 50}, "train_setup.val_check_interval: 50 batches, but an epoch has "
                                                "only 2"),
    ("device_setup", {"accelerator": "gpu"}, "device_setup.accelerator: a GPU is asked for"),
])
def test_mistakes_are_refused_before_anything_is_written(make_dataset: Callable[..., TinyDataset], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, section: str,
                                                         values: dict[str, Any], key: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = make_dataset(n=4)
    config = config_from_dict(make_config(data.csv, str(tmp_path / "out"), **{section: values}))
    with pytest.raises(OdeonError, match=key.replace(".", r"\.").replace("(", r"\(")):
        train(config)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def demo_tiles(tmp_path_factory: pytest.TempPathFactory) -> demo.DemoDataset:
    """The demo dataset, small: 8 training and 4 validation tiles of 64 x 64 pixels."""
    return demo.write_dataset(str(tmp_path_factory.mktemp("demo")), n_train=8, n_val=4, n_test=0, size=64)


# Every model, and with them every loss, optimizer and scheduler of the specification, trains a few steps.
ZOO = [
    ("unet", "ce", {"optimizer": "adam"}, None),
    ("lightunet", "bce", {"optimizer": "sgd", "momentum": 0.9}, {"scheduler": "cycliclr", "max_lr": 0.05}),
    ("resnet18", "focal", {"optimizer": "radam"}, {"scheduler": "cosineannealinglr"}),
    ("resnet34", "combo", {"optimizer": "adamax"}, {"scheduler": "cosineannealingwarmrestarts", "T_0": 1}),
    ("resnet50", "ce", {"optimizer": "rmsprop"}, {"scheduler": "reducelronplateau", "patience": 0}),
    ("resnet101", "bce", {"optimizer": "adamw"}, None),
    ("resnet152", "focal", {"optimizer": "adam"}, None),
    ("deeplab", "combo", {"optimizer": "sgd", "momentum": 0.9}, None),
]


@pytest.mark.parametrize(("model", "loss", "optimizer", "scheduler"), ZOO)
def test_every_model_trains_on_the_demo_dataset(demo_tiles: demo.DemoDataset, tmp_path: Path, model: str,
                                                loss: str, optimizer: dict[str, Any],
                                                scheduler: dict[str, Any] | None) -> None:
    config = demo.demo_config(demo_tiles, str(tmp_path), epochs=1)
    config["data_source"]["test_file"] = None
    config["train_setup"].update(model_name=model, loss=loss, optimizer_config=optimizer, scheduler_config=scheduler,
                                 testing=True, deterministic=True, batch_size=2, lr=0.001)
    config["output_setup"].update(save_top_k=1, use_tensorboard=False)  # resnet152 checkpoints are 0.8 GB
    config["device_setup"]["num_workers"] = 0
    result = train(config_from_dict(config))
    assert len(result.history) == 1
    assert all(np.isfinite(entry["loss"]) and np.isfinite(entry["Average/IoU"]) for entry in result.history.values())


def test_train_options_reach_the_trainer() -> None:
    config = config_from_dict(make_config("x.csv", "o", train_setup={
        "epochs": 7, "testing": True, "deterministic": True, "val_check_interval": 0.5},
        output_setup={"progress": 0}))
    options = trainer_options(config, n_train_samples=100)
    assert options["max_epochs"] == 7 and options["deterministic"] == "warn"
    assert options["limit_train_batches"] == options["limit_val_batches"] == TESTING_BATCHES
    assert options["val_check_interval"] == 0.5 and options["enable_progress_bar"] is False
    default = trainer_options(config_from_dict(make_config("x.csv", "o")), n_train_samples=100)
    assert default["limit_train_batches"] is None and default["deterministic"] is False
    assert default["enable_progress_bar"] is False and default["log_every_n_steps"] == 50
    assert trainer_options(config_from_dict(make_config("x.csv", "o", output_setup={"progress": 5})),
                           n_train_samples=6)["enable_progress_bar"] is True


def test_val_check_interval_in_batches_is_checked_against_the_epoch_and_testing() -> None:
    config = config_from_dict(make_config("x.csv", "o", train_setup={"val_check_interval": 6, "batch_size": 2}))
    check_val_check_interval(config, n_train_samples=12, world_size=1)
    with pytest.raises(ConfigError, match="6 batches, but an epoch has only 3"):
        check_val_check_interval(config, n_train_samples=12, world_size=2)
    testing = config_from_dict(make_config("x.csv", "o", train_setup={"val_check_interval": 6, "testing": True}))
    with pytest.raises(ConfigError, match=f"an epoch has only {TESTING_BATCHES}"):
        check_val_check_interval(testing, n_train_samples=100, world_size=1)
