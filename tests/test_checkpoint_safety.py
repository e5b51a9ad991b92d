"""Checkpoints never run code, old ones keep loading, and a run folder is always restartable: after a
kill -9 at any moment, a damaged last checkpoint, or a planted file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from odeon_job.config import config_from_dict, upgrade_config, upgrades
from odeon_job.errors import ConfigError
from odeon_job.storage.model_files import UnsafeModelFile
from odeon_job.tasks.train import train
from odeon_job.training.segmentation_module import SegmentationModule, load_module

from conftest import TinyDataset, make_config, stored_checkpoint_config, stored_checkpoint_dataset

pytestmark = pytest.mark.slow

STORED_V1 = Path(__file__).parent / "data" / "checkpoint_v1" / "last.ckpt"
#: The layout written before config_version: the whole configuration and data description as hyperparameters.
STORED_LEGACY = Path(__file__).parent / "data" / "checkpoint_legacy" / "last.ckpt"


# --- 1. loading a checkpoint never runs code; old checkpoints load --------------------------------------


@pytest.mark.filterwarnings("ignore:The dirpath has changed")
def test_a_checkpoint_written_by_config_version_1_loads_and_resumes(tmp_path: Path) -> None:
    """tests/data/checkpoint_v1/last.ckpt was written by the version that introduced config_version 1 and is
    never regenerated: every later version must load it safely and resume from it."""
    stored = torch.load(STORED_V1, map_location="cpu", weights_only=True)
    hyperparameters = stored["hyper_parameters"]
    assert stored["config_version"] == hyperparameters["config_version"] == 1
    assert all(isinstance(value, (str, int, float, bool, list, dict, type(None))) for value in hyperparameters.values())
    module = SegmentationModule.load_from_checkpoint(STORED_V1, map_location="cpu").eval()
    same = load_module(str(STORED_V1))
    tile = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert module(tile).shape == (1, 3, 16, 16) and torch.equal(module(tile), same(tile))

    csv = stored_checkpoint_dataset(tmp_path / "ds")
    config = config_from_dict(stored_checkpoint_config(csv, str(tmp_path / "out"), epochs=2, continue_training=True))
    folder = tmp_path / "out" / "exp" / "v"
    (folder / "odeon_val_loss_ckpt").mkdir(parents=True)
    shutil.copy(STORED_V1, folder / "odeon_val_loss_ckpt" / "last.ckpt")
    (folder / "config.json").write_text(config.model_dump_json())
    result = train(config)
    assert list(result.history) == ["0", "1"]  # epoch 0 from the stored checkpoint, epoch 1 trained now


def test_a_checkpoint_of_the_layout_before_config_version_loads() -> None:
    """Checkpoints written before the module took plain arguments held the whole configuration and data
    description: load_module upgrades them."""
    legacy = torch.load(STORED_LEGACY, map_location="cpu", weights_only=True)
    assert set(legacy["hyper_parameters"]) == {"config", "data_spec"}
    module = load_module(str(STORED_LEGACY))
    assert module.class_labels == ("class 1", "class 2", "class 3") and module.hparams["model_name"] == "lightunet"
    assert all(
        torch.equal(value, legacy["state_dict"][key])
        for key, value in module.state_dict().items()
        if key in legacy["state_dict"]
    )


class _RunsCode:
    """Unpickling this runs a command: what a planted checkpoint would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("resume", [True, "auto"])
def test_a_planted_checkpoint_that_would_run_code_is_refused_and_nothing_runs(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, resume: bool | str
) -> None:
    data = make_dataset(n=4)
    base = make_config(data.csv, str(tmp_path / "out"), output_setup={"use_tensorboard": False})
    train(config_from_dict(base))
    last = tmp_path / "out" / "exp" / "v" / "odeon_val_loss_ckpt" / "last.ckpt"
    marker = tmp_path / "code-ran"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["hyper_parameters"]["payload"] = _RunsCode(marker)
    torch.save(checkpoint, last)
    base["train_setup"].update(epochs=2, continue_training=resume)
    with pytest.raises(UnsafeModelFile, match=r"last.ckpt: refused: .*nothing in it was run"):
        train(config_from_dict(base))
    assert not marker.exists()


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = make_dataset(n=6)
    base = make_config(
        data.csv,
        str(tmp_path / "out"),
        train_setup={"epochs": 2, "deterministic": True},
        output_setup={"use_tensorboard": False},
    )
    straight = train(config_from_dict({**base, "output_setup": {**base["output_setup"], "version_name": "s"}}))
    train(config_from_dict(base))
    folder = tmp_path / "out" / "exp" / "v" / "odeon_val_loss_ckpt"
    assert torch.load(folder / "last-previous.ckpt", weights_only=True)["epoch"] == 0
    last = folder / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # cut short
    base["train_setup"].update(continue_training=True)
    with caplog.at_level("WARNING", logger="odeon"):
        resumed = train(config_from_dict(base))
    assert "last.ckpt: damaged: not a complete torch file" in caplog.text
    assert "resume: from " in caplog.text and "last-previous.ckpt" in caplog.text
    assert list(resumed.history) == ["0", "1"]
    assert [e["loss"] for e in resumed.history.values()] == pytest.approx(
        [e["loss"] for e in straight.history.values()]
    )


def test_auto_with_no_checkpoint_that_loads_starts_afresh_saying_so(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = make_dataset(n=4)
    base = make_config(data.csv, str(tmp_path / "out"), output_setup={"use_tensorboard": False})
    train(config_from_dict(base))
    folder = tmp_path / "out" / "exp" / "v" / "odeon_val_loss_ckpt"
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 cut")
    base["train_setup"].update(continue_training="auto", epochs=1)
    with caplog.at_level("WARNING", logger="odeon"):
        assert list(train(config_from_dict(base)).history) == ["0"]
    assert "no checkpoint to resume from loads" in caplog.text and "starts afresh" in caplog.text


def test_a_configuration_of_an_older_version_is_upgraded_and_a_newer_one_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = {
        "data_source": {"train_file": "a.csv"},
        "train_setup": {"model_name": "unet"},
        "output_setup": {"output_folder": "o"},
    }
    later = upgrades.CONFIG_VERSION + 1
    with pytest.raises(ConfigError, match=f"config_version {later} was written by a later version of odeon-job"):
        config_from_dict({**data, "config_version": later})
    # A future version that renamed a key: files (and checkpoints) of the versions before still read.
    monkeypatch.setattr(upgrades, "CONFIG_VERSION", later)
    monkeypatch.setattr(
        upgrades,
        "UPGRADES",
        {**upgrades.UPGRADES, later - 1: lambda d: {**d, "renamed": d.pop("data_source")}},
    )
    upgraded = upgrade_config({**data, "config_version": 1})
    assert upgraded["config_version"] == later and upgraded["renamed"] == {"train_file": "a.csv"}


# --- 2. a killed job always comes back ---------------------------------------------------------------


def _start(config_path: Path) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "odeon_job", "train", "-c", str(config_path)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return process, lines


def _wait_for(lines: list[str], text: str, process: subprocess.Popen[str]) -> bool:
    """Whether ``text`` appeared before the process ended (no time limit of ours: a busy machine is slow)."""
    while not any(text in line for line in lines):
        if process.poll() is not None:
            return any(text in line for line in lines)
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("moment", ["start-up", "first epoch", "after a validation", "later epoch"])
def test_kill_9_at_any_moment_then_auto_restart_gives_the_uninterrupted_history(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, moment: str
) -> None:
    """SIGKILL (an OOM kill, a lost node) leaves no grace: a restart with continue_training "auto" must reach
    the configured epochs with the history of a run never interrupted, whatever the moment of the kill."""
    data = make_dataset(n=14)

    def config(version: str) -> Path:
        path = tmp_path / f"{version}.json"
        path.write_text(
            json.dumps(
                make_config(
                    data.csv,
                    str(tmp_path / "out"),
                    train_setup={"epochs": 3, "deterministic": True, "continue_training": "auto"},
                    output_setup={"version_name": version, "use_tensorboard": False},
                )
            )
        )
        return path

    straight, _ = _start(config("straight"))
    assert straight.wait() == 0
    expected = json.loads((tmp_path / "out" / "exp" / "straight" / "history_val.json").read_text())

    path = config("killed")
    process, lines = _start(path)
    waits = {
        "start-up": None,
        "first epoch": "run folder:",
        "after a validation": "epoch 1/3:",
        "later epoch": "epoch 2/3:",
    }
    text = waits[moment]
    if text is None:
        time.sleep(1.0)  # still importing, or checking the data
    elif not _wait_for(lines, text, process):
        pytest.fail(f"the run ended before {text!r}: {''.join(lines)[-2000:]}")
    if moment in ("first epoch", "later epoch"):
        time.sleep(0.2)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    restarted, lines = _start(path)
    assert restarted.wait() == 0, "".join(lines)[-3000:]
    history = json.loads((tmp_path / "out" / "exp" / "killed" / "history_val.json").read_text())
    assert list(history) == list(expected) == ["0", "1", "2"]
    assert [e["loss"] for e in history.values()] == pytest.approx([e["loss"] for e in expected.values()])


def test_a_run_folder_moved_elsewhere_resumes_and_tests_its_own_best_checkpoint(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    """A run copied to another place (a disk, a bucket) and resumed there: its best checkpoints are found
    in the new folder. Lightning alone forgot their scores: the resumed run took its next checkpoint for
    the best, tested it, and kept more files than save_top_k."""
    data = make_dataset(n=6)
    config = make_config(
        data.csv,
        str(tmp_path / "old"),
        data_source={"test_file": data.csv},
        train_setup={"optimizer_config": {"optimizer": "sgd"}, "lr": 1e-30},
        output_setup={"save_top_k": 1, "use_tensorboard": False},
    )
    train(config_from_dict(config))
    shutil.copytree(tmp_path / "old", tmp_path / "new")
    shutil.rmtree(tmp_path / "old")
    config["output_setup"]["output_folder"] = str(tmp_path / "new")
    config["train_setup"].update(epochs=2, continue_training=True)
    result = train(config_from_dict(config))  # SGD at 1e-30: no improvement, the best stays the copied one
    assert result.best_checkpoint.startswith(str(tmp_path / "new")) and result.test
    best = [
        name
        for name in os.listdir(tmp_path / "new" / "exp" / "v" / "odeon_val_loss_ckpt")
        if not name.startswith("last")
    ]
    assert len(best) == 1  # save_top_k 1: the copied best is still the one tracked


def test_a_link_planted_in_a_run_folder_is_refused_before_anything_is_written(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    """A 'predictions' link to a folder outside the run: resuming would have written the predictions there."""
    data = make_dataset(n=4)
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        data_source={"val_file": data.csv, "test_file": data.csv},
        output_setup={"get_prediction": True, "use_tensorboard": False},
    )
    result = train(config_from_dict(config))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    predictions = Path(result.run_folder) / "predictions"
    shutil.rmtree(predictions)
    predictions.symlink_to(elsewhere)
    before = sorted(p.name for p in Path(result.run_folder).iterdir())
    config["train_setup"].update(continue_training=True, epochs=2)
    with pytest.raises(
        ConfigError,
        match=r"output_setup: the run folder .* holds a link that leads out of it "
        r"\(.*predictions -> .*elsewhere\): nothing is written through links",
    ):
        train(config_from_dict(config))
    assert not any(elsewhere.iterdir())
    assert sorted(p.name for p in Path(result.run_folder).iterdir()) == before
    predictions.unlink()
    (Path(result.run_folder) / "inner").symlink_to(Path(result.run_folder) / "history_val.json")  # inside: harmless
    train(config_from_dict(config))
