from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import ORIGIN, PIXEL, TinyDataset, make_config, onehot, write_tif


def odeon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "odeon_job", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def _write_config(tmp_path: Path, config: dict[str, Any], name: str = "config.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return str(path)


def test_help_and_schema_do_not_import_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from odeon_job.commands.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['schema']) == 0\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'torchvision') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_schema_is_json_schema() -> None:
    result = odeon("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout)["title"] == "JobConfig"


def test_missing_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = odeon("train", "-c", str(tmp_path / "nope.json"))
    assert result.returncode == 2
    assert result.stderr == f"odeon: error: {tmp_path / 'nope.json'}: not found\n"


def test_no_config_at_all(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ODEON_CONFIG"}
    result = subprocess.run([sys.executable, "-m", "odeon_job", "train"], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stderr == (
        "odeon: error: no configuration: give -c CONFIG (a path, a URL, or - for the standard "
        "input) or set ODEON_CONFIG\n"
    )


def test_config_error_is_one_line_and_v_adds_the_traceback(tmp_path: Path) -> None:
    config = make_config("train.csv", str(tmp_path / "out"))
    config["train_setup"]["epohcs"] = 3
    path = _write_config(tmp_path, config)
    result = odeon("train", "-c", path)
    assert result.returncode == 2
    assert result.stderr == (f"odeon: error: {path}: train_setup.epohcs: unknown key (did you mean 'epochs'?)\n")
    verbose = odeon("train", "-c", path, "-v")
    assert verbose.returncode == 2
    assert "Traceback (most recent call last)" in verbose.stderr and "pydantic" in verbose.stderr
    assert verbose.stderr.rstrip().endswith("unknown key (did you mean 'epochs'?)")


def test_odeon_config_environment_variable_names_the_config(tmp_path: Path) -> None:
    path = _write_config(tmp_path, {"data_source": {}})
    result = odeon("validate", env={"ODEON_CONFIG": path})
    assert result.returncode == 2
    assert f"odeon: error: {path}: data_source.train_file: required key is missing" in result.stderr


@pytest.mark.slow
def test_train_runs_and_reports(make_dataset: Callable[..., TinyDataset], tmp_path: Path) -> None:
    data = make_dataset(n=4)
    path = _write_config(tmp_path, make_config(data.csv, str(tmp_path / "out")))
    result = odeon("train", "-c", path)
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1: train_loss" in result.stderr
    assert "final validation: loss" in result.stderr
    assert f"run folder: {tmp_path / 'out' / 'exp' / 'v'}" in result.stderr


def test_verbose_shows_settings_data_storage_and_timings(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    data = make_dataset(n=4)
    config = make_config(
        data.csv, str(tmp_path / "out"), output_setup={"mlflow_tracking_uri": "http://someone:s3cr3t@127.0.0.1:1"}
    )
    result = odeon("train", "-v", "-c", _write_config(tmp_path, config))
    assert result.returncode == 0, result.stderr
    for expected in (
        "DEBUG odeon: settings: {",
        "DEBUG odeon: data: train: 3 sample(s), first ",
        "DEBUG odeon: data: val: 1 sample(s)",
        "DEBUG odeon: storage: S3 endpoint ",
        "GDAL_DISABLE_READDIR_ON_OPEN",
        "DEBUG odeon: timing: training took ",
    ):
        assert expected in result.stderr, expected
    assert "s3cr3t" not in result.stderr


@pytest.mark.slow
def test_a_bad_row_met_during_training_is_one_line(make_dataset: Callable[..., TinyDataset], tmp_path: Path) -> None:
    data = make_dataset(n=4)
    os.remove(data.images[3])
    path = _write_config(
        tmp_path,
        make_config(
            data.csv, str(tmp_path / "out"), data_source={"val_file": data.csv}, device_setup={"num_workers": 1}
        ),
    )
    result = odeon("train", "-c", path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("odeon: error:")]
    assert errors == [f"odeon: error: {data.csv} row 4: {data.images[3]} not found"]
    assert "Traceback" not in result.stderr


def test_validate_summarises_a_good_dataset_without_lightning(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    data = make_dataset(n=5, bands=4)
    path = _write_config(tmp_path, make_config(data.csv, str(tmp_path / "out"), data_source={"image_bands": [1, 2, 3]}))
    code = (
        "import sys\nfrom odeon_job.commands.cli import main\n"
        f"code = main(['validate', '-c', {path!r}])\n"
        "assert 'pytorch_lightning' not in sys.modules\nsys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"config: {path}: valid" in lines
    assert "samples: train 4, val 1, test 0" in lines
    assert "tile size: 32x32 (5)" in lines
    assert "image bands: [1, 2, 3], data type: uint8 (5)" in lines
    assert "mask bands: [1, 2, 3] (one band per class)" in lines
    assert "classes: 3 (class 1, class 2, class 3)" in lines
    assert "CRS: EPSG:2154 (5); pixel size: 0.2 x 0.2 (5)" in lines
    assert (
        "ignored pixels (left out of the loss and every metric: pixels where none of the mask bands [1, 2, 3] "
        "is on and pixels of the mask files' nodata value (where they declare one)): train 0.0%, val 0.0%" in lines
    )
    assert lines[-1] == "OK: 5 samples checked"


def test_validate_reports_every_bad_row(make_dataset: Callable[..., TinyDataset], tmp_path: Path) -> None:
    data = make_dataset(n=6)
    os.remove(data.images[1])  # row 2: missing
    write_tif(
        Path(data.images[2]), np.zeros((2, 32, 32), np.uint8), origin=(ORIGIN[0] + 2 * 32 * PIXEL, ORIGIN[1])
    )  # row 3: 2 bands
    write_tif(Path(data.masks[3]), onehot(np.zeros((32, 30), np.uint8), 3))  # row 4: size
    write_tif(Path(data.masks[4]), onehot(np.zeros((32, 32), np.uint8), 3), origin=(0.0, 0.0))  # row 5: grid
    write_tif(Path(data.masks[5]), onehot(np.zeros((32, 32), np.uint8), 3), crs="EPSG:4326")  # row 6: CRS
    first_row = tmp_path / "val.csv"  # train keeps the CSV order: its first (good) row sets the bands
    first_row.write_text(
        Path(data.csv)
        .read_text()
        .splitlines()[0]
        .replace("img/", f"{data.folder}/img/")
        .replace("msk/", f"{data.folder}/msk/")
        + "\n"
    )
    path = _write_config(
        tmp_path,
        make_config(
            data.csv, str(tmp_path / "out"), data_source={"image_bands": [1, 2, 3], "val_file": str(first_row)}
        ),
    )
    result = odeon("validate", "-c", path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("odeon: error:")]
    csv = data.csv
    assert sorted(errors) == sorted(
        [
            f"odeon: error: {csv} row 2: {data.images[1]} not found",
            f"odeon: error: {csv} row 3: {data.images[2]} has 2 band(s); data_source.image_bands asks for band 3",
            f"odeon: error: {csv} row 4: image {data.images[3]} is 32x32 pixels but mask {data.masks[3]} is 30x32",
            f"odeon: error: {csv} row 5: image and mask are not on the same grid (their transforms differ)",
            f"odeon: error: {csv} row 6: image CRS EPSG:2154 differs from mask CRS EPSG:4326",
        ]
    )
    assert result.stderr.rstrip().endswith("5 problem(s) found")


def test_python_dash_m_runs_the_cli() -> None:
    result = odeon("--help")
    assert result.returncode == 0 and "train" in result.stdout and "validate" in result.stdout


def test_same_grid_is_judged_in_pixels_not_in_map_units() -> None:
    from odeon_job.tasks.validate import same_grid

    lambert = (0.2, 0.0, 651_000.0, 0.0, -0.2, 6_862_000.0)
    assert same_grid(lambert, lambert)
    assert same_grid(lambert, (0.2, 0.0, 651_000.001, 0.0, -0.2, 6_862_000.0))  # 0.5 % of a pixel
    assert not same_grid(lambert, (0.2, 0.0, 651_000.2, 0.0, -0.2, 6_862_000.0))  # one pixel east
    assert not same_grid(lambert, (0.25, 0.0, 651_000.0, 0.0, -0.25, 6_862_000.0))
    degrees = (1e-5, 0.0, 2.35, 0.0, -1e-5, 48.85)
    assert not same_grid(degrees, (1e-5, 0.0, 2.35001, 0.0, -1e-5, 48.85))  # one pixel in degrees


# --- validate refuses what train refuses at start: one code path ----------------------------------------


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        (
            "train_setup",
            {"optimizer_config": {"optimizer": "sgd", "momentun": 0.9}},
            "train_setup.optimizer_config.momentun: sgd has no argument 'momentun' (did you mean 'momentum'?)",
        ),
        # ODEON passed sgd no betas and said nothing: a key written for nothing is refused, by validate too.
        (
            "train_setup",
            {"optimizer_config": {"optimizer": "sgd", "betas": [0.9, 0.99]}},
            "train_setup.optimizer_config.betas: sgd has no argument 'betas'",
        ),
        (
            "train_setup",
            {"scheduler_config": {"scheduler": "cycliclr"}},
            "train_setup.scheduler_config.max_lr: cycliclr needs this argument",
        ),
        # 9 rows, percentage_val 0.25: 7 training samples in batches of 2, the single last one dropped: 3.
        (
            "train_setup",
            {"val_check_interval": 4},
            "train_setup.val_check_interval: 4 batches, but an epoch has only 3 (7 training samples, batch_size 2, "
            "1 process(es))",
        ),
        ("device_setup", {"accelerator": "tpu"}, 'device_setup.accelerator: "tpu" needs the torch_xla package'),
        (
            "device_setup",
            {"accelerator": "cpu", "device": "0"},
            "device_setup.device: '0' names GPUs, but accelerator is \"cpu\"",
        ),
        (
            "device_setup",
            {"accelerator": "cpu", "device": 2, "num_processes": 3},
            "device_setup.device: 2 processes on the CPU, but num_processes says 3",
        ),
        # 9 rows, percentage_val 0.25: 2 validation tiles; a third process would have none (a Lightning traceback once
        # the run folder was written).
        (
            "device_setup",
            {"accelerator": "cpu", "num_processes": 3, "strategy": "ddp"},
            "data_source.percentage_val: "
            "the val split has 2 tile(s) for 3 processes, and every process needs at least one",
        ),
    ],
)
def test_validate_and_train_refuse_the_same_configurations_with_one_line(
    make_dataset: Callable[..., TinyDataset],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    section: str,
    values: dict[str, Any],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from odeon_job.commands.cli import main
    from odeon_job.process.launch import INHERITED_CONFIG

    monkeypatch.setenv(INHERITED_CONFIG, "")  # main() hands its config to DDP children here: undone after

    data = make_dataset(n=9)
    path = _write_config(tmp_path, make_config(data.csv, str(tmp_path / "out"), **{section: values}))
    for command in ("validate", "train"):
        assert main([command, "-c", path]) == 2, command
        stderr = capsys.readouterr().err
        errors = [line for line in stderr.splitlines() if line.startswith("odeon: error:")]
        assert len(errors) == 1 and errors[0].startswith(f"odeon: error: {message}"), (command, stderr)
        assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_validate_checks_gpu_settings_without_needing_a_gpu(
    make_dataset: Callable[..., TinyDataset],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The chart's test pod (and a laptop) has no GPU: validate passes a GPU configuration there, while
    train on such a machine refuses it."""
    from odeon_job.commands.cli import main
    from odeon_job.process.launch import INHERITED_CONFIG

    monkeypatch.setenv(INHERITED_CONFIG, "")
    data = make_dataset(n=8)  # 2 validation tiles: one for each GPU
    path = _write_config(
        tmp_path, make_config(data.csv, str(tmp_path / "out"), device_setup={"accelerator": "gpu", "device": [0, 1]})
    )
    assert main(["validate", "-c", path]) == 0, capsys.readouterr().err
    assert main(["train", "-c", path]) == 2
    assert "a GPU is asked for, but none is visible" in capsys.readouterr().err
