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

from odeon_job.process.shutdown import EXIT_TERMINATED

from conftest import TinyDataset, make_config

pytestmark = pytest.mark.slow

GRACE = 15.0


def _start(config: dict, folder: Path, *args: str, stdout: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
    path = folder / "c.json"
    path.write_text(json.dumps(config))
    return subprocess.Popen(
        [sys.executable, "-m", "odeon_job", "train", "-c", str(path), *args],
        cwd=folder,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


#: Against hangs only: a shared CI runner may be many times slower than a quiet machine. The tests assert
#: what the job did (which path stopped it, what it left), never how fast a loaded machine ran it.
HANG = 1200.0
FORCED_EXIT = "did not stop within"


def _wait_for(condition: Callable[[], bool], job: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + HANG
    while not condition():
        assert job.poll() is None, job.stderr.read() if job.stderr else ""
        assert time.monotonic() < deadline, f"no {what} in {HANG:.0f} s"
        time.sleep(0.02)


def _terminate(job: subprocess.Popen[str]) -> str:
    """SIGTERM; the job's standard error once it exited. Whether it stopped in time is what its own grace
    timer decides (it exits forcibly and says so past stop_grace_period): the tests check which path ran."""
    job.send_signal(signal.SIGTERM)
    try:
        _, stderr = job.communicate(timeout=HANG)
    finally:
        job.kill()
    return stderr


def test_sigterm_mid_epoch_stops_in_time_and_the_run_resumes(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    data = make_dataset(n=40)
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        train_setup={"epochs": 500},
        output_setup={"use_tensorboard": False},
        device_setup={"num_workers": 1, "stop_grace_period": GRACE},
    )
    run = tmp_path / "out" / "exp" / "v"
    history_file = run / "history_val.json"
    job = _start(config, tmp_path)
    _wait_for(lambda: history_file.exists() and len(json.loads(history_file.read_text())) >= 2, job, "history")
    time.sleep(0.3)  # into the next epoch
    stderr = _terminate(job)

    assert job.returncode == EXIT_TERMINATED, stderr[-3000:]
    assert FORCED_EXIT not in stderr  # it stopped after the batch, within the grace period, by itself
    assert "odeon: stopped by SIGTERM" in stderr and "continue_training" in stderr
    assert "Traceback" not in stderr
    before = json.loads(history_file.read_text())
    saved = torch.load(run / "odeon_val_loss_ckpt" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == len(before) - 1  # the last validated epoch; the partial one is dropped

    epochs = len(before) + 2
    resumed = _start(
        config, tmp_path, "--set", f"train_setup.epochs={epochs}", "--set", 'train_setup.continue_training="auto"'
    )
    _, stderr = resumed.communicate(timeout=HANG)
    assert resumed.returncode == 0, stderr[-3000:]
    after = json.loads(history_file.read_text())
    assert list(after) == [str(epoch) for epoch in range(epochs)]
    assert all(after[epoch] == before[epoch] for epoch in before)


def test_sigterm_before_the_first_validation_saves_a_checkpoint(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    data = make_dataset(n=400, size=64)  # an epoch of 200 batches: a few seconds
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        train_setup={"epochs": 3},
        output_setup={"use_tensorboard": False, "progress": 1, "progress_every": 0.01},
        device_setup={"stop_grace_period": GRACE},
    )
    job = _start(config, tmp_path)
    assert job.stderr is not None
    seen = ""
    while not re.search(r"epoch 1/3, step [1-9]\d*/150 ", seen):  # a plain progress line: training has begun
        chunk = os.read(job.stderr.fileno(), 4096).decode(errors="replace")
        assert chunk, seen[-3000:]
        seen += chunk
    stderr = seen + _terminate(job)
    assert job.returncode == EXIT_TERMINATED, stderr[-3000:]
    assert FORCED_EXIT not in stderr
    last = tmp_path / "out" / "exp" / "v" / "odeon_val_loss_ckpt" / "last.ckpt"
    assert "SIGTERM before the first validation: saved the current state" in stderr
    assert torch.load(last, weights_only=True)["epoch"] == 0

    resumed = _start(config, tmp_path, "--set", "train_setup.continue_training=true")
    _, stderr = resumed.communicate(timeout=HANG)
    assert resumed.returncode == 0, stderr[-3000:]
    assert list(json.loads((last.parent.parent / "history_val.json").read_text())) == ["0", "1", "2"]


def test_sigterm_during_start_up_exits_at_once(tmp_path: Path) -> None:
    """The job reads its configuration from a standard input the test keeps open: it is provably still starting
    up when SIGTERM lands, however loaded the machine (a 4-tile job used to finish first on a busy one)."""
    job = subprocess.Popen(
        [sys.executable, "-m", "odeon_job", "train", "-c", "-", "-v"],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert job.stderr is not None and job.stdin is not None
    seen = []
    for line in job.stderr:  # the handler is installed before the heavy imports and before the configuration
        seen.append(line)
        if "SIGTERM: handler installed" in line:
            break
    else:
        pytest.fail("".join(seen)[-3000:])
    job.send_signal(signal.SIGTERM)
    try:
        job.wait(timeout=HANG)  # the standard input still open: no configuration ever came
        stderr = "".join(seen) + job.stderr.read()
    finally:
        job.kill()
        job.stdin.close()
    assert job.returncode == EXIT_TERMINATED, stderr[-3000:]
    # At once: the handler ends start-up where it is; it does not wait for a training loop to notice.
    assert "stopped by SIGTERM before training started" in stderr
    assert "data: " not in stderr and "run folder" not in stderr and FORCED_EXIT not in stderr
    assert list(tmp_path.iterdir()) == []  # nothing half-made where it ran


def test_sigterm_leaves_the_mlflow_run_killed(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning closes the MLflow logger at the stop; the run says KILLED (not FAILED, not RUNNING)."""
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = make_dataset(n=40)
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        train_setup={"epochs": 500},
        output_setup={"use_tensorboard": False, "use_mlflow": True},
        device_setup={"stop_grace_period": GRACE},
    )
    history_file = tmp_path / "out" / "exp" / "v" / "history_val.json"
    job = _start(config, tmp_path)
    _wait_for(lambda: history_file.exists() and len(json.loads(history_file.read_text())) >= 1, job, "history")
    stderr = _terminate(job)
    assert job.returncode == EXIT_TERMINATED, stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert run.info.status == "KILLED"


def test_a_sigterm_landing_inside_a_library_s_except_exception_still_stops_start_up() -> None:
    """The signal lands while logging writes a line: logging catches every Exception its handlers raise, so a
    Terminated that was an Exception was swallowed, start-up went on, and the job stopped only at the forced exit
    20 s later (seen under load). Terminated is a BaseException, as KeyboardInterrupt is."""
    import logging
    import threading

    from odeon_job.process.shutdown import GracefulStop, Terminated

    class SignalledWhileWriting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside the write
                for _ in range(1000):
                    pass
            except Exception:  # noqa: BLE001 - what logging itself does around emit
                self.handleError(record)

    logger = logging.getLogger("odeon.test-signal")
    logger.propagate = False
    logger.addHandler(SignalledWhileWriting())
    stop = GracefulStop(3600).install()
    try:
        with pytest.raises(Terminated, match="before training started"):
            logger.warning("a start-up line")
    finally:
        stop.restore()
        logger.handlers.clear()
        for timer in threading.enumerate():  # the forced exit the signal armed must not fire in this process
            if isinstance(timer, threading.Timer):
                timer.cancel()


def test_sigterm_during_the_sanity_check_stops_after_the_batch_in_hand(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning's loops are running from the sanity check on: a SIGTERM there used to raise in the middle of the
    batch (with DataLoader workers, one of them could print a ConnectionResetError traceback); it now stops once
    the batch in hand is done, as it does during training."""
    from odeon_job.config import config_from_dict
    from odeon_job.process.shutdown import GracefulStop, Terminated
    from odeon_job.tasks.train import train
    from odeon_job.training.segmentation_module import SegmentationModule

    finished: list[int] = []
    step = SegmentationModule.validation_step

    def signalled_step(self: SegmentationModule, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if self.trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGTERM)  # (the handler runs here, in this thread, at once)
            time.sleep(0.05)
        step(self, batch, batch_idx)
        finished.append(batch_idx)

    monkeypatch.setattr(SegmentationModule, "validation_step", signalled_step)
    monkeypatch.setattr(GracefulStop, "_force_exit", lambda self: None)  # (its deadline must not end pytest)
    data = make_dataset(n=8)
    config = make_config(data.csv, str(tmp_path / "out"), train_setup={"epochs": 2}, output_setup={"use_mlflow": False})
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated, match="stopped by SIGTERM"):
        train(config_from_dict(config))
    assert finished == [0]  # the batch in hand was finished, and no other began
    assert signal.getsignal(signal.SIGTERM) == handler  # (the handlers were put back)
    monkeypatch.setattr(SegmentationModule, "validation_step", step)
    config["train_setup"]["continue_training"] = True  # what it saved resumes
    result = train(config_from_dict(config))
    assert list(result.history) == ["0", "1"]
