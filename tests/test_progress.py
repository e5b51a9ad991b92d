"""Progress where the training runs: plain lines with the run's ETA in a pod's log or a pipe, the bar on a
terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

from odeon_job.outputs.callbacks.progress_lines import format_duration

from conftest import TinyDataset, make_config

LINE = re.compile(
    r"epoch (\d+)/3, step (\d+)/(\d+) \(\d+\.\d samples/s\), epoch ETA (\d+h\d\dm|\d+m\d\ds|\d+s), "
    r"run ETA (\d+h\d\dm|\d+m\d\ds|\d+s)"
)


def _config(data: TinyDataset, tmp_path: Path, **output: Any) -> str:
    config = make_config(
        data.csv, str(tmp_path / "out"), train_setup={"epochs": 3}, output_setup={"progress": 1, **output}
    )
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_a_training_into_a_pipe_prints_plain_lines_with_the_run_eta(make_dataset: Any, tmp_path: Path) -> None:
    data = make_dataset(n=8)
    config = _config(data, tmp_path, progress_every=1e-6)  # (a line at every step)
    result = subprocess.run(
        [sys.executable, "-m", "odeon_job", "train", "-c", config], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    lines = [match.groups() for match in LINE.finditer(result.stderr)]
    assert {int(epoch) for epoch, *_ in lines} == {1, 2, 3}, result.stderr
    assert all(int(step) <= int(total) for _, step, total, *_ in lines)
    assert lines[-1][0] == "3" and lines[-1][-1] in ("0s", "1s"), lines[-1]  # the last step: nothing left
    assert "\r" not in result.stderr + result.stdout  # no bar redrawn in a log
    assert "epoch 3/3: train_loss" in result.stderr  # the validation report beside them


def test_a_training_on_a_terminal_draws_the_bar(make_dataset: Any, tmp_path: Path) -> None:
    data = make_dataset(n=8)
    config = _config(data, tmp_path, progress_every=1e-6)
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # (a terminal has a size)
    process = subprocess.Popen(
        [sys.executable, "-m", "odeon_job", "train", "-c", config],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the training ended
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=600) == 0, output.decode(errors="replace")[-3000:]
    text = output.decode(errors="replace")
    assert "\r" in text and re.search(r"Epoch 2: 100%\|", text), text[-3000:]
    assert not LINE.search(text)  # the bar, not the lines


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (42, "42s"), (187, "3m07s"), (3600 * 10 + 5 * 60 + 20, "10h05m")]
)
def test_durations_read_as_a_log_shows_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
