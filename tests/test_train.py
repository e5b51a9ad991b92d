from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch

from odeon_job.commands import demo
from odeon_job.config import config_from_dict
from odeon_job.errors import ConfigError, DataError, OdeonError, one_line
from odeon_job.outputs.run_folder import prediction_names
from odeon_job.tasks.preflight import TESTING_BATCHES, check_val_check_interval
from odeon_job.tasks.train import train, trainer_options
from odeon_job.training.metrics import NAMES
from odeon_job.training.models import build_model
from odeon_job.training.segmentation_module import SegmentationModule

from conftest import TinyDataset, make_config, onehot, overflowing_dataset, write_tif

pytestmark = pytest.mark.slow


def test_two_epochs_write_the_run_folder(make_dataset: Callable[..., TinyDataset], tmp_path: Path) -> None:
    data = make_dataset(n=8)
    test = make_dataset(n=2, name="test", seed=1)
    out = tmp_path / "out"
    config = config_from_dict(
        make_config(
            data.csv,
            str(out),
            data_source={"test_file": test.csv},
            train_setup={"epochs": 2},
            output_setup={"save_top_k": 1, "log_learning_rate": True},
        )
    )
    result = train(config)

    folder = out / "exp" / "v"
    assert result.run_folder == str(folder)
    assert json.loads((folder / "config.json").read_text()) == config.model_dump(mode="json")

    history = json.loads((folder / "history_val.json").read_text())
    assert list(history) == ["0", "1"] and history == result.history
    labels = ["Overall", "Average", "class 1", "class 2", "class 3"]
    figures = {f"{label}/{name}" for label in labels for name in NAMES}
    val_pixels = 2 * 32 * 32  # 2 validation tiles of 32 x 32
    for entry in history.values():
        assert set(entry) == figures | {"cm_micro", "cm_macro", "loss", "learning rate", "ignored pixels"}
        assert np.array(entry["cm_micro"]).shape == (3, 3) and np.sum(entry["cm_micro"]) == val_pixels
        assert all(sum(row) == pytest.approx(1.0) or sum(row) == 0 for row in entry["cm_macro"])
        assert entry["loss"] > 0 and entry["learning rate"] == 0.01
        assert all(value is None or 0 <= value <= 1 for key, value in entry.items() if key in figures)
    test_history = json.loads((folder / "history_test.json").read_text())
    assert list(test_history) == [min(history, key=lambda k: history[k]["loss"])]  # the tested checkpoint's
    assert set(next(iter(test_history.values()))) == figures | {"cm_micro", "cm_macro", "loss", "ignored pixels"}
    assert result.test == test_history

    loss_ckpts = set(os.listdir(folder / "odeon_val_loss_ckpt"))
    best = os.path.basename(result.best_checkpoint)
    assert loss_ckpts == {"last.ckpt", "last-previous.ckpt", best}  # save_top_k 1, the last two for resuming
    assert best.startswith("lightunet-epoch=") and "-val_loss=" in best
    assert len(os.listdir(folder / "odeon_val_miou_ckpt")) == 1
    assert sorted(os.listdir(folder / "tensorboard")) == ["test", "train", "val"]

    # A checkpoint holds the model, optimizer, scheduler and config, and rebuilds the model by itself.
    checkpoint = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    assert checkpoint["optimizer_states"] and checkpoint["lr_schedulers"]
    module = SegmentationModule.load_from_checkpoint(result.best_checkpoint, map_location="cpu").eval()
    assert module.hparams["model_name"] == "lightunet"
    assert json.loads(module.hparams["config_json"]) == config.model_dump(mode="json")
    assert module.class_labels == ("class 1", "class 2", "class 3")
    assert module(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def _scalars(folder: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "histograms": 0}).Reload()
    return [event.value for event in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def test_tensorboard_runs_hold_figures_images_and_histograms(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = make_dataset(n=8)
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        data_source={"test_file": data.csv},
        train_setup={"epochs": 2, "optimizer_config": {"optimizer": "sgd", "momentum": 0.9}},
        output_setup={"log_learning_rate": True},
    )
    result = train(config_from_dict(config))
    board = Path(result.run_folder) / "tensorboard"
    assert _scalars(board / "train", "learning rate") == [pytest.approx(0.01)] * 2
    assert _scalars(board / "train", "momentum") == [pytest.approx(0.9)] * 2
    assert len(_scalars(board / "train", "loss")) == 2
    assert _scalars(board / "val", "Average/IoU") == [pytest.approx(e["Average/IoU"]) for e in result.history.values()]
    assert _scalars(board / "val", "class 2/F1-Score") and _scalars(board / "test", "Overall/Accuracy")
    val = EventAccumulator(str(board / "val"), size_guidance={"images": 0}).Reload()
    assert {"samples", "confusion matrix", "IoU per class", "training curves"} <= set(val.Tags()["images"])
    assert len(val.Images("confusion matrix")) == 2  # one per validation
    test = EventAccumulator(str(board / "test"), size_guidance={"images": 0}).Reload()
    assert {"samples", "confusion matrix", "IoU per class"} <= set(test.Tags()["images"])
    train_run = EventAccumulator(str(board / "train"), size_guidance={"histograms": 0}).Reload()
    assert "inc.0.weight" in train_run.Tags()["histograms"] and train_run.Tags()["graph"]


def test_pth_mode_writes_three_files_and_tests_the_best(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    data = make_dataset(n=8)
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        data_source={"test_file": data.csv},
        train_setup={"epochs": 2},
        output_setup={"model_filename": "ocsge.pth", "use_tensorboard": False},
    )
    result = train(config_from_dict(config))
    folder = Path(result.run_folder)
    assert {"ocsge.pth", "optimizer_ocsge.pth", "train_ocsge.pth"} <= set(os.listdir(folder))
    assert sorted(os.listdir(folder / "odeon_val_loss_ckpt")) == ["last-previous.ckpt", "last.ckpt"]
    assert not (folder / "odeon_val_miou_ckpt").exists()
    weights = torch.load(folder / "ocsge.pth", weights_only=True)
    assert set(weights) == set(build_model("lightunet", 3, 3).state_dict())
    training = torch.load(folder / "train_ocsge.pth", weights_only=True)
    best = min(result.history, key=lambda k: result.history[k]["loss"])
    assert training["epoch"] == int(best) and training["metrics"]["loss"] == result.history[best]["loss"]
    assert training["config"]["output_setup"]["model_filename"] == "ocsge.pth"
    assert "state" in torch.load(folder / "optimizer_ocsge.pth", weights_only=True)
    assert result.best_checkpoint == str(folder / "ocsge.pth") and result.test


def test_exports_follow_the_checkpoints_they_belong_to(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    data = make_dataset(n=8)
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        train_setup={"epochs": 3, "export_checkpoint": ".pth"},
        output_setup={"save_top_k": 1, "use_tensorboard": False},
    )
    folder = Path(train(config_from_dict(config)).run_folder)
    for sub in ("odeon_val_loss_ckpt", "odeon_val_miou_ckpt"):
        names = sorted(os.listdir(folder / sub))
        checkpoints = [n for n in names if n.endswith(".ckpt")]
        assert sorted(n[:-5] + ".pth" for n in checkpoints) == [n for n in names if n.endswith(".pth")]
    exported = next(
        p for p in (folder / "odeon_val_loss_ckpt").iterdir() if p.suffix == ".pth" and not p.stem.startswith("last")
    )
    state = torch.load(exported, weights_only=True)
    checkpoint = torch.load(exported.with_suffix(".ckpt"), weights_only=True)["state_dict"]
    assert all(torch.equal(value, checkpoint[f"model.{key}"]) for key, value in state.items())


def test_resume_gives_the_weights_of_an_uninterrupted_run(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    data = make_dataset(n=10)

    def config(epochs: int, version: str, workers: int, resume: bool = False) -> Any:
        return config_from_dict(
            make_config(
                data.csv,
                str(tmp_path / "out"),
                data_source={"data_augmentation": {"train": ["rotation90", "radiometry"]}},
                train_setup={
                    "epochs": epochs,
                    "deterministic": True,
                    "continue_training": resume,
                    "scheduler_config": {"scheduler": "cosineannealinglr", "T_max": 4},
                },
                output_setup={"version_name": version, "use_tensorboard": False},
                device_setup={"num_workers": workers},
            )
        )

    straight = train(config(4, "straight", workers=0))
    train(config(2, "split", workers=2))
    resumed = train(config(4, "split", workers=2, resume=True))
    assert list(resumed.history) == ["0", "1", "2", "3"]
    losses = [e["loss"] for e in straight.history.values()]
    assert [e["loss"] for e in resumed.history.values()] == pytest.approx(losses)
    final_straight = torch.load(Path(straight.run_folder) / "odeon_val_loss_ckpt" / "last.ckpt", weights_only=True)
    final_resumed = torch.load(Path(resumed.run_folder) / "odeon_val_loss_ckpt" / "last.ckpt", weights_only=True)
    assert final_resumed["global_step"] == final_straight["global_step"] and final_resumed["epoch"] == 3
    for key, value in final_straight["state_dict"].items():
        assert torch.equal(value, final_resumed["state_dict"][key]), key
    assert any(name.startswith("config_resumed_") for name in os.listdir(resumed.run_folder))
    assert json.loads((Path(resumed.run_folder) / "config.json").read_text())["train_setup"]["epochs"] == 2


def test_last_checkpoint_is_renewed_at_every_validation(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    """Even when no top-k file is saved (Lightning 2.6 then skips save_last): resuming loses no epoch."""
    data = make_dataset(n=8)
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        train_setup={"epochs": 3, "lr": 1e-30, "optimizer_config": {"optimizer": "sgd"}},
        output_setup={"save_top_k": 1, "use_tensorboard": False},
    )
    folder = Path(train(config_from_dict(config)).run_folder) / "odeon_val_loss_ckpt"
    best = [name for name in os.listdir(folder) if not name.startswith("last")]
    assert len(best) == 1 and best[0].startswith("lightunet-epoch=0-")  # the weights never change: no improvement
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 2


def test_nothing_to_resume_is_a_clear_error(make_dataset: Callable[..., TinyDataset], tmp_path: Path) -> None:
    data = make_dataset(n=4)
    config = config_from_dict(make_config(data.csv, str(tmp_path / "out"), train_setup={"continue_training": True}))
    with pytest.raises(
        ConfigError,
        match=r"train_setup.continue_training: nothing to resume: .*last.ckpt does not "
        r"exist",
    ):
        train(config)


def test_early_stopping_stops_after_patience_validations_without_improvement(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = make_dataset(n=4)
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        train_setup={"epochs": 10, "early_stopping": {"monitor": "val_loss", "patience": 2, "min_delta": 1e9}},
        output_setup={"use_tensorboard": False},
    )
    # Nothing can improve by 1e9: the first validation sets the best, the next 2 do not improve, stop.
    with caplog.at_level("INFO", logger="odeon"):
        assert list(train(config_from_dict(config)).history) == ["0", "1", "2"]
    assert "early stopping: val_loss has not improved by more than 1e+09 for 2 validation(s) (best " in caplog.text
    assert "the training stopped after epoch 3 of 10" in caplog.text


def test_two_validations_per_epoch(make_dataset: Callable[..., TinyDataset], tmp_path: Path) -> None:
    data = make_dataset(n=10)  # 8 training samples in batches of 2: 4 batches, validation after 2 and 4
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        train_setup={"epochs": 2, "val_check_interval": 0.5},
        output_setup={"use_tensorboard": False},
    )
    assert list(train(config_from_dict(config)).history) == ["0", "0.1", "1", "1.1"]


@pytest.mark.parametrize(
    ("output_type", "dtype", "values"),
    [
        ("float32", "float32", None),
        ("uint8", "uint8", None),
        ("bit", "uint8", {0, 1}),
    ],
)
def test_predictions_are_georeferenced_like_their_input(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, output_type: str, dtype: str, values: set[int] | None
) -> None:
    data = make_dataset(n=4)
    test = make_dataset(n=3, name="test", seed=2)
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        data_source={"test_file": test.csv},
        output_setup={"get_prediction": True, "prediction_output_type": output_type, "use_tensorboard": False},
    )
    folder = Path(train(config_from_dict(config)).run_folder) / "predictions"
    assert sorted(os.listdir(folder)) == ["0.tif", "1.tif", "2.tif"]
    for image in test.images:
        with rasterio.open(image) as source, rasterio.open(folder / Path(image).name) as prediction:
            assert prediction.crs == source.crs and prediction.transform == source.transform
            assert (prediction.count, prediction.dtypes[0]) == (3, dtype)
            data_out = prediction.read()
            if output_type == "bit":
                assert prediction.tags(1, ns="IMAGE_STRUCTURE")["NBITS"] == "1"  # a per-band tag
                assert set(np.unique(data_out)) <= values and (data_out.sum(axis=0) == 1).all()
            elif output_type == "float32":
                assert data_out.min() >= 0 and data_out.max() <= 1
                assert np.allclose(data_out.sum(axis=0), 1, atol=1e-5)  # softmax: ce loss
            else:
                assert data_out.sum(axis=0).min() >= 255 - 3 and data_out.sum(axis=0).max() <= 255 + 3


def test_prediction_names_stay_unique() -> None:
    assert prediction_names(["/a/x.tif", "/b/y.tif"]) == ["x.tif", "y.tif"]
    assert prediction_names(["/a/x.tif", "/b/x.tif", "/c/z.tif"]) == ["000001_x.tif", "000002_x.tif", "000003_z.tif"]


def test_workers_augmentations_class_index_masks_and_determinism(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    data = make_dataset(n=6, encoding="class_index", n_classes=4)
    config = config_from_dict(
        make_config(
            data.csv,
            str(tmp_path / "out"),
            data_source={
                "mask_bands": [1],
                "class_labels": ["a", "b", "c", "d"],
                "data_augmentation": {"train": ["rotation90", "rotation", "radiometry"]},
                "normalization_weights": {"train": {"mean": [0.5] * 3, "std": [0.25] * 3}},
            },
            train_setup={
                "deterministic": True,
                "class_imbalance": [1, 2, 2, 0.5],
                "optimizer_config": {"optimizer": "sgd", "momentum": 0.9},
            },
            output_setup={"use_tensorboard": False, "save_history": False},
            device_setup={"num_workers": 2},
        )
    )
    result = train(config)
    assert np.isfinite(result.final["loss"])
    folder = Path(result.run_folder)
    assert not (folder / "history_val.json").exists() and not (folder / "tensorboard").exists()


def test_a_bad_row_read_in_a_worker_names_its_row(make_dataset: Callable[..., TinyDataset], tmp_path: Path) -> None:
    data = make_dataset(n=4)
    write_tif(Path(data.masks[2]), onehot(np.zeros((16, 32), np.uint8), 3))  # row 3: mask of another size
    config = config_from_dict(
        make_config(
            data.csv, str(tmp_path / "out"), data_source={"val_file": data.csv}, device_setup={"num_workers": 1}
        )
    )
    with pytest.raises(DataError) as caught:
        train(config)
    assert one_line(caught.value) == (
        f"{data.csv} row 3: image {data.images[2]} is 32x32 pixels but mask {data.masks[2]} is 32x16"
    )
    # What was written before the failure stays: the resolved config.
    assert (tmp_path / "out" / "exp" / "v" / "config.json").exists()


def test_an_existing_run_folder_is_not_overwritten(make_dataset: Callable[..., TinyDataset], tmp_path: Path) -> None:
    data = make_dataset(n=4)
    folder = tmp_path / "out" / "exp" / "v"
    (folder / "odeon_val_loss_ckpt").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "odeon_val_loss_ckpt" / "lightunet-epoch=0-val_loss=0.5000.ckpt").write_bytes(b"a run")
    with pytest.raises(ConfigError, match=f"output_setup.version_name: the run folder {folder} already exists"):
        train(config_from_dict(make_config(data.csv, str(tmp_path / "out"))))
    assert (folder / "config.json").read_text() == "{}"
    # A folder of somebody else's files (no config.json of ours) is not touched either.
    other = tmp_path / "out" / "exp" / "w"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=f"the run folder {other} already exists"):
        train(config_from_dict(make_config(data.csv, str(tmp_path / "out"), output_setup={"version_name": "w"})))
    assert (other / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("continue_training", [False, True, "auto"])
def test_a_run_that_failed_before_its_first_checkpoint_can_be_run_again(
    make_dataset: Callable[..., TinyDataset],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    continue_training: bool | str,
) -> None:
    """Bad data stops the first attempt after its run folder exists; the user fixes the CSV and runs the
    same command: the folder (no checkpoint: not a run yet) is emptied and reused, saying so."""
    data = make_dataset(n=6)
    good = Path(data.csv).read_text()
    Path(data.csv).write_text(good + "img/missing.tif,msk/0.tif\n")

    def config(resume: bool | str) -> Any:
        return config_from_dict(
            make_config(
                data.csv,
                str(tmp_path / "out"),
                data_source={"val_file": data.csv},
                train_setup={"continue_training": resume},
            )
        )

    with pytest.raises(DataError, match="missing.tif not found"):
        train(config(False))  # fails in the sanity check's validation, after the run folder was written
    folder = tmp_path / "out" / "exp" / "v"
    assert (folder / "config.json").exists() and not (folder / "odeon_val_loss_ckpt").exists()
    (folder / "history_val.json").write_text('{"0": {}}')  # what a kill between history and checkpoint leaves
    Path(data.csv).write_text(good)
    with caplog.at_level("WARNING", logger="odeon"):
        result = train(config(continue_training))
    assert list(result.history) == ["0"]
    assert "a previous attempt stopped before its first checkpoint" in caplog.text
    assert (folder / "odeon_val_loss_ckpt" / "last.ckpt").exists()


@pytest.mark.parametrize(
    ("section", "values", "key"),
    [
        ("output_setup", {"use_wandb": True}, "output_setup.use_wandb: the wandb package is not installed"),
        ("train_setup", {"continue_training": True}, "train_setup.continue_training: nothing to resume"),
        (
            "train_setup",
            {"scheduler_config": {"scheduler": "cosineannealingwarmrestarts"}},
            "train_setup.scheduler_config.T_0: cosineannealingwarmrestarts needs this argument",
        ),
        (
            "train_setup",
            {"loss": "focal", "loss_params": {"alpha": [1, 2]}},
            "train_setup.loss_params.alpha: 2 weights but there are 3 classes",
        ),
        ("train_setup", {"init_weights": "/nonexistent/w.pth"}, "/nonexistent/w.pth: not found"),
        (
            "train_setup",
            {"optimizer_config": {"optimizer": "adam", "momentum": 0.9}},
            "train_setup.optimizer_config.momentum: adam has no argument 'momentum'",
        ),
        ("data_source", {"image_bands": [1, 2, 7]}, "data_source.image_bands asks for band 7"),
        ("data_source", {"class_labels": ["a", "b"]}, "data_source.class_labels: 2 labels but"),
        ("train_setup", {"class_imbalance": [1, 1]}, "train_setup.class_imbalance: 2 weights but there are 3"),
        # 3 training samples in batches of 2: the single last one is dropped, so one batch.
        (
            "train_setup",
            {"val_check_interval": 50},
            "train_setup.val_check_interval: 50 batches, but an epoch has only 1",
        ),
        ("device_setup", {"accelerator": "gpu"}, "device_setup.accelerator: a GPU is asked for"),
    ],
)
def test_mistakes_are_refused_before_anything_is_written(
    make_dataset: Callable[..., TinyDataset],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    section: str,
    values: dict[str, Any],
    key: str,
) -> None:
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
def test_every_model_trains_on_the_demo_dataset(
    demo_tiles: demo.DemoDataset,
    tmp_path: Path,
    model: str,
    loss: str,
    optimizer: dict[str, Any],
    scheduler: dict[str, Any] | None,
) -> None:
    config = demo.demo_config(demo_tiles, str(tmp_path), epochs=1)
    config["data_source"]["test_file"] = None
    config["output_setup"]["get_prediction"] = False  # (the demo maps its test tiles: here there are none)
    config["train_setup"].update(
        model_name=model,
        loss=loss,
        optimizer_config=optimizer,
        scheduler_config=scheduler,
        testing=True,
        deterministic=True,
        batch_size=2,
        lr=0.001,
        class_imbalance=None,
    )  # the demo's weights are for ce only
    config["output_setup"].update(save_top_k=1, use_tensorboard=False)  # resnet152 checkpoints are 0.8 GB
    config["device_setup"]["num_workers"] = 0
    result = train(config_from_dict(config))
    assert len(result.history) == 1
    assert all(np.isfinite(entry["loss"]) and np.isfinite(entry["Average/IoU"]) for entry in result.history.values())


def test_train_options_reach_the_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("odeon_job.tasks.train.draws_bars", lambda: True)  # (a terminal: bars)
    config = config_from_dict(
        make_config(
            "x.csv",
            "o",
            train_setup={"epochs": 7, "testing": True, "deterministic": True, "val_check_interval": 0.5},
            output_setup={"progress": 0},
        )
    )
    options = trainer_options(config, n_train_samples=100)
    assert options["max_epochs"] == 7 and options["deterministic"] == "warn"
    assert options["limit_train_batches"] == options["limit_val_batches"] == TESTING_BATCHES
    assert options["val_check_interval"] == 0.5 and options["enable_progress_bar"] is False
    default = trainer_options(config_from_dict(make_config("x.csv", "o")), n_train_samples=100)
    assert default["limit_train_batches"] is None and default["deterministic"] is False
    assert default["enable_progress_bar"] is False and default["log_every_n_steps"] == 50
    assert (
        trainer_options(config_from_dict(make_config("x.csv", "o", output_setup={"progress": 5})), n_train_samples=6)[
            "enable_progress_bar"
        ]
        is True
    )


def test_val_check_interval_in_batches_is_checked_against_the_epoch_and_testing() -> None:
    config = config_from_dict(make_config("x.csv", "o", train_setup={"val_check_interval": 6, "batch_size": 2}))
    check_val_check_interval(config, n_train_samples=12, world_size=1)
    with pytest.raises(ConfigError, match="6 batches, but an epoch has only 3"):
        check_val_check_interval(config, n_train_samples=12, world_size=2)
    testing = config_from_dict(make_config("x.csv", "o", train_setup={"val_check_interval": 6, "testing": True}))
    with pytest.raises(ConfigError, match=f"an epoch has only {TESTING_BATCHES}"):
        check_val_check_interval(testing, n_train_samples=100, world_size=1)


# --- every validation is a checkpoint candidate; the learning rate logged is the one used ---------------


def test_every_validation_is_a_checkpoint_candidate_when_validating_every_batch(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    """``val_check_interval: 1`` (an int: every batch) equals 1.0, which made Lightning save at the end of
    the training epoch only: the best of an epoch's validations was lost and the test used the last."""
    data = make_dataset(n=10)  # 8 training samples in batches of 2: 4 validations per epoch
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        train_setup={"epochs": 1, "val_check_interval": 1, "lr": 0.05},
        output_setup={"save_top_k": 4, "use_tensorboard": False},
        data_source={"test_file": data.csv},
    )
    result = train(config_from_dict(config))
    history = result.history
    assert len(history) == 4
    saved = sorted(
        name for name in os.listdir(Path(result.run_folder) / "odeon_val_loss_ckpt") if not name.startswith("last")
    )
    assert sorted(name.rsplit("val_loss=", 1)[1][:-5] for name in saved) == sorted(
        f"{entry['loss']:.4f}" for entry in history.values()
    )  # one file per validation (top 4 of 4)
    best_key = min(history, key=lambda key: history[key]["loss"])
    assert os.path.basename(result.best_checkpoint).endswith(f"val_loss={history[best_key]['loss']:.4f}.ckpt")
    assert list(result.test) == [best_key]


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [
        # T_max 2: epoch 0 trains at 0.01, epoch 1 at 0.005 (the value logged for epoch 0 before the fix).
        ({"scheduler": "cosineannealinglr", "T_max": 2}, [0.01, 0.005]),
        ({"scheduler": "cosineannealingwarmrestarts", "T_0": 2}, [0.01, 0.005]),
        ({"scheduler": "reducelronplateau", "patience": 0, "cooldown": 0, "threshold": 1e9}, [0.01, 0.005]),
    ],
)
def test_the_learning_rate_logged_is_the_one_the_epoch_trained_with(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, scheduler: dict[str, Any], expected: list[float]
) -> None:
    data = make_dataset(n=6)
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        train_setup={"epochs": 2, "scheduler_config": scheduler},
        output_setup={"log_learning_rate": True},
    )
    result = train(config_from_dict(config))
    assert [entry["learning rate"] for entry in result.history.values()] == pytest.approx(expected)
    board = Path(result.run_folder) / "tensorboard" / "train"
    assert _scalars(board, "learning rate") == pytest.approx(expected)


def test_a_subset_of_mask_bands_ignores_the_other_classes_pixels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """15 one-hot bands, mask_bands [1, 3, 6]: pixels of the 12 other classes are left out of the loss
    and every metric, and counted; they were class 1 (the argmax of zeros) before."""
    rng = np.random.default_rng(3)
    rows, maps = [], []
    for i in range(6):
        classes = rng.integers(0, 15, (16, 16))
        classes[:8] = [0, 2, 5][i % 3]  # half of each tile is of a selected class
        write_tif(tmp_path / f"i{i}.tif", rng.integers(0, 255, (3, 16, 16)).astype(np.uint8))
        write_tif(tmp_path / f"m{i}.tif", onehot(classes, 15))
        rows.append(f"i{i}.tif,m{i}.tif")
        maps.append(classes)
    (tmp_path / "all.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "val.csv").write_text("\n".join(rows[:2]) + "\n")
    config = make_config(
        str(tmp_path / "all.csv"),
        str(tmp_path / "out"),
        data_source={"val_file": str(tmp_path / "val.csv"), "mask_bands": [1, 3, 6]},
        output_setup={"use_tensorboard": False},
    )
    with caplog.at_level("INFO", logger="odeon"):
        entry = train(config_from_dict(config)).final
    selected = sum(int(np.isin(m, [0, 2, 5]).sum()) for m in maps[:2])
    assert np.sum(entry["cm_micro"]) == selected
    assert entry["ignored pixels"] == 2 * 16 * 16 - selected > 0
    assert (
        "ignored pixels (left out of the loss and every metric): pixels where none of the mask bands "
        "[1, 3, 6] is on" in caplog.text
    )
    assert "of val pixels ignored" in caplog.text


def test_tiles_of_different_sizes_train_padded_and_predict_at_their_own_size(
    tmp_path: Path, make_dataset: Callable[..., TinyDataset]
) -> None:
    """Mixed sizes in a split failed at collation ('Trying to resize storage'): batches are now padded to
    their largest tile, the padding ignored, and each prediction has its own tile's size and grid."""
    data = make_dataset(n=6, size=32)
    rng = np.random.default_rng(5)
    classes = rng.integers(0, 3, (24, 40))
    write_tif(data.folder / "img" / "odd.tif", rng.integers(0, 255, (3, 24, 40)).astype(np.uint8))
    write_tif(data.folder / "msk" / "odd.tif", onehot(classes, 3))
    csv = data.folder / "mixed.csv"
    csv.write_text(Path(data.csv).read_text() + "img/odd.tif,msk/odd.tif\n")
    config = make_config(
        str(csv),
        str(tmp_path / "out"),
        data_source={"val_file": str(csv), "test_file": str(csv)},
        train_setup={"batch_size": 4},
        output_setup={"get_prediction": True, "use_tensorboard": False},
    )
    result = train(config_from_dict(config))
    entry = result.final
    assert np.sum(entry["cm_micro"]) == 6 * 32 * 32 + 24 * 40  # padding counted nowhere
    assert entry["ignored pixels"] == 0
    with rasterio.open(Path(result.run_folder) / "predictions" / "odd.tif") as prediction:
        with rasterio.open(data.folder / "img" / "odd.tif") as source:
            assert (prediction.height, prediction.width) == (24, 40)
            assert prediction.transform == source.transform


def test_a_non_finite_training_loss_stops_with_one_line_naming_the_batch(tmp_path: Path) -> None:
    """Finite but absurd pixel values (1e38 with image_max_value 1) overflow the network: the run used to
    go on at 'loss nan', write a bare NaN into history_val.json and die in TensorBoard's histogram."""
    csv = overflowing_dataset(tmp_path)
    config = make_config(
        csv, str(tmp_path / "out"), data_source={"image_max_value": 1, "val_file": csv}, train_setup={"batch_size": 4}
    )
    with pytest.raises(DataError) as raised:
        train(config_from_dict(config))
    message = one_line(raised.value)
    assert "\n" not in message
    assert message.startswith("the training loss became NaN or infinite at epoch 1, step 0 in a batch of ")
    assert all(f"train.csv row {row}" in message for row in range(1, 5))


def test_history_files_are_valid_json_even_with_non_finite_figures(tmp_path: Path) -> None:
    from odeon_job.training.evaluation import json_safe

    entries = {"0": {"loss": float("nan"), "cm_macro": [[float("inf"), 0.5]], "Average/IoU": None}}
    assert json.loads(json.dumps(json_safe(entries), allow_nan=False)) == {
        "0": {"loss": None, "cm_macro": [[None, 0.5]], "Average/IoU": None}
    }


@pytest.mark.parametrize("job", ["../escaped", "a/b", "..", " "])
def test_odeon_job_name_must_be_one_folder_name(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job: str
) -> None:
    """ODEON_JOB_NAME names the run folder when the config leaves the names out: '../escaped' wrote outside
    output_folder."""
    data = make_dataset(n=4)
    monkeypatch.setenv("ODEON_JOB_NAME", job)
    config = make_config(data.csv, str(tmp_path / "out"), output_setup={"name_exp_log": None, "version_name": None})
    with pytest.raises(ConfigError, match=r"^ODEON_JOB_NAME=.* must be a single folder name"):
        train(config_from_dict(config))
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "out").exists()


def test_the_validation_loss_is_the_mean_over_its_pixels_whatever_the_batches(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    """5 validation tiles in batches of 2 (2, 2, 1) or 5: the same loss. It was a plain mean of batch means (the
    weights given to torchmetrics' MeanMetric were dropped), so the last tile weighed twice as much."""
    train_data, val = make_dataset(n=4), make_dataset(n=5, name="val", seed=3)
    losses = {}
    for batch_size in (2, 5):
        # SGD at 1e-30 cannot move float32 weights: both runs validate the same initial model.
        config = make_config(
            train_data.csv,
            str(tmp_path / "out"),
            data_source={"val_file": val.csv},
            train_setup={"optimizer_config": {"optimizer": "sgd"}, "lr": 1e-30, "batch_size": batch_size},
            output_setup={"version_name": f"b{batch_size}", "use_tensorboard": False},
        )
        losses[batch_size] = train(config_from_dict(config)).history["0"]["loss"]
    assert losses[2] == pytest.approx(losses[5], rel=1e-6)
