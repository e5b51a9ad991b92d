"""SIGTERM, as Kubernetes sends it at eviction: exit within the grace period, resumable, status 143."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from odeon_job.shutdown import EXIT_TERMINATED

from conftest import TinyDataset, make_config

pytestmark = pytest.mark.slow

GRACE = 15.0


def _start(config: dict, folder: Path, *args: str, stdout: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
    path = folder / "c.json"
    path.write_text(json.dumps(config))
    return subprocess.Popen([sys.executable, "-m", "odeon_job", "train", "-c", str(path), *args], cwd=folder,
                            stdout=stdout, stderr=subprocess.PIPE, text=True)


def _wait_for(condition: Callable[[], bool], job: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert job.poll() is None, job.stderr.read() if job.stderr else ""
        assert time.monotonic() < deadline, f"no {what} in two minutes"
        time.sleep(0.02)


def _terminate(job: subprocess.Popen[str]) -> tuple[float, str]:
    """SIGTERM; the seconds the job took to exit and its standard error."""
    sent = time.monotonic()
    job.send_signal(signal.SIGTERM)
    try:
        _, stderr = job.communicate(timeout=GRACE + 30)
    finally:
        job.kill()
    return time.monotonic() - sent, stderr


def test_sigterm_mid_epoch_stops_in_time_and_the_run_resumes(make_dataset: Callable[..., TinyDataset],
                                                             tmp_path: Path) -> None:
    data = make_dataset(n=40)
    config = make_config(data.csv, str(tmp_path / "out"), train_setup={"epochs": 500},
                         output_setup={"use_tensorboard": False},
                         device_setup={"num_workers": 1, "stop_grace_period": GRACE})
    run = tmp_path / "out" / "exp" / "v"
    history_file = run / "history_val.json"
    job = _start(config, tmp_path)
    _wait_for(lambda: history_file.exists() and len(json.loads(history_file.read_text())) >= 2, job, "history")
    time.sleep(0.3)  # into the next epoch
    took, stderr = _terminate(job)

    assert job.returncode == EXIT_TERMINATED, stderr[-3000:]
    assert took < GRACE, f"{took:.1f} s to stop"
    assert "odeon: stopped by SIGTERM" in stderr and "continue_training" in stderr
    assert "Traceback" not in stderr
    before = json.loads(history_file.read_text())
    saved = torch.load(run / "odeon_val_loss_ckpt" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == len(before) - 1  # the last validated epoch; the partial one is dropped

    epochs = len(before) + 2
    resumed = _start(config, tmp_path, "--set", f"train_setup.epochs={epochs}",
                     "--set", "train_setup.continue_training=\"auto\"")
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-3000:]
    after = json.loads(history_file.read_text())
    assert list(after) == [str(epoch) for epoch in range(epochs)]
    assert all(after[epoch] == before[epoch] for epoch in before)


def test_sigterm_before_the_first_validation_saves_a_checkpoint(make_dataset: Callable[..., TinyDataset],
                                                               tmp_path: Path) -> None:
    data = make_dataset(n=400, size=64)  # an epoch of 200 batches: a few seconds
    config = make_config(data.csv, str(tmp_path / "out"), train_setup={"epochs": 3},
                         output_setup={"use_tensorboard": False, "progress": 1},
                         device_setup={"stop_grace_period": GRACE})
    job = _start(config, tmp_path, stdout=subprocess.PIPE)
    assert job.stdout is not None
    seen = ""
    while not re.search(r"Epoch 0: .*\| *[1-9]\d*/150 ", seen):  # the progress bar's first training steps
        chunk = os.read(job.stdout.fileno(), 4096).decode(errors="replace")
        assert chunk, seen[-3000:]
        seen += chunk
    took, stderr = _terminate(job)
    assert job.returncode == EXIT_TERMINATED, stderr[-3000:]
    assert took < GRACE
    last = tmp_path / "out" / "exp" / "v" / "odeon_val_loss_ckpt" / "last.ckpt"
    assert "SIGTERM before the first validation: saved the current state" in stderr
    assert torch.load(last, weights_only=True)["epoch"] == 0

    resumed = _start(config, tmp_path, "--set", "train_setup.continue_training=true")
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-3000:]
    assert list(json.loads((last.parent.parent / "history_val.json").read_text())) == ["0", "1", "2"]


def test_sigterm_during_start_up_exits_at_once(make_dataset: Callable[..., TinyDataset], tmp_path: Path) -> None:
    data = make_dataset(n=4)
    job = _start(make_config(data.csv, str(tmp_path / "out")), tmp_path)
    time.sleep(1.0)  # importing torch and Lightning: no training yet
    took, stderr = _terminate(job)
    assert job.returncode == EXIT_TERMINATED, stderr[-3000:]
    assert took < 5
    assert not (tmp_path / "out" / "exp" / "v").exists()  # nothing half-made
