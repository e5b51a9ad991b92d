"""MLflow tracking against a real ``mlflow server`` on 127.0.0.1 (SQLite backend, artifacts proxied to
moto's S3), a local store, an outage in the middle of a training, and resuming."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from odeon_job.commands import cli
from odeon_job.outputs.loggers.mlflow import MlflowOutput
from odeon_job.outputs.tracking import environment_tags, flatten, metric_name
from odeon_job.redaction import redact

from conftest import TinyDataset, make_config, use_s3_endpoint
from mlflow_server import MlflowServer, free_port
from s3_server import Bucket, MotoServer, new_bucket

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    bucket = new_bucket(moto_server.endpoint)
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), moto_server.endpoint, bucket.url("mlartifacts"))
    server.bucket = bucket  # type: ignore[attr-defined]
    yield server
    server.stop()


def mlflow_config(data: TinyDataset, output: str, **output_setup: object) -> dict:
    return make_config(data.csv, output, train_setup={"epochs": 2}, output_setup={"use_mlflow": True, **output_setup})


def write_config(config: dict, folder: Path) -> str:
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


def history_of(client: object, run_id: str, name: str) -> list[float]:
    return [metric.value for metric in sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)]


def test_a_training_is_recorded_in_the_tracking_server(
    make_dataset: Callable[..., TinyDataset],
    mlflow_server: MlflowServer,
    moto_server: MotoServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow
    from mlflow import MlflowClient

    use_s3_endpoint(monkeypatch, moto_server.endpoint)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    monkeypatch.setenv("CI_COMMIT_SHA", "0123abcd")
    monkeypatch.setenv("IMAGE_TAG", "registry.example/odeon:1.2.3")
    data, test = make_dataset(n=8), make_dataset(n=2, name="test", seed=1)
    config = mlflow_config(
        data,
        str(tmp_path / "out"),
        registered_model_name="odeon-test-model",
        mlflow_experiment="tracking-test",
        get_prediction=True,
        save_top_k=1,
        prediction_output_type="float32",
    )
    config["data_source"]["test_file"] = test.csv
    assert cli.main(["train", "-c", write_config(config, tmp_path)]) == 0

    run_folder = tmp_path / "out" / "exp" / "v"
    client = MlflowClient(mlflow_server.url)
    record = json.loads((run_folder / "mlflow_run.json").read_text())
    assert record["tracking_uri"] == mlflow_server.url
    run = client.get_run(record["run_id"])
    assert run.info.run_name == "exp/v" and run.info.status == "FINISHED"  # the run folder's names
    assert client.get_experiment(run.info.experiment_id).name == "tracking-test"

    params = run.data.params
    assert params["train_setup.epochs"] == "2" and params["train_setup.model_name"] == "lightunet"
    assert params["data_source.train_file"] == data.csv and params["output_setup.use_mlflow"] == "true"
    assert "null" not in params.values() and "data_source.val_file" not in params  # unset keys are no parameters
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}  # the Datasets column: the CSVs
    assert set(inputs) == {"train+val: samples.csv", "test: samples.csv"}
    train_input = inputs["train+val: samples.csv"]
    assert json.loads(train_input.dataset.profile) == {"num_rows": 8}
    assert json.loads(train_input.dataset.source) == {"uri": data.csv}
    assert train_input.dataset.digest == hashlib.sha256(Path(data.csv).read_bytes()).hexdigest()[:16]
    assert {tag.key: tag.value for tag in train_input.tags}["mlflow.data.context"] == "train,val"
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == "0123abcd" and tags["image.tag"] == "registry.example/odeon:1.2.3"
    assert tags["odeon.run_folder"] == str(run_folder)

    history = json.loads((run_folder / "history_val.json").read_text())
    for name in ("loss", "Average/IoU", "class 2/F1-Score"):
        assert history_of(client, run.info.run_id, f"val/{name}") == [entry[name] for entry in history.values()]
    assert len(history_of(client, run.info.run_id, "train/loss")) == 2
    test_history = json.loads((run_folder / "history_test.json").read_text())
    assert history_of(client, run.info.run_id, "test/loss") == [next(iter(test_history.values()))["loss"]]
    assert any(name.startswith("system/cpu_utilization") for name in run.data.metrics)

    artifacts = {
        info.path
        for folder in ("run", "figures", "checkpoints/best_val_loss", "checkpoints/best_val_miou")
        for info in client.list_artifacts(run.info.run_id, folder)
    }
    assert {
        "run/config.json",
        "run/history_val.json",
        "run/history_test.json",
        "run/model_card.md",
        "figures/confusion_matrix_val.png",
        "figures/confusion_matrix_test.png",
        "figures/iou_val.png",
        "figures/samples_val.png",
        "figures/samples_test.png",
        "figures/training_curves.png",
    } <= artifacts
    best = Path(next(p for p in (run_folder / "odeon_val_loss_ckpt").iterdir() if not p.name.startswith("last")))
    assert f"checkpoints/best_val_loss/{best.name}" in artifacts
    assert any(path.startswith("checkpoints/best_val_miou/lightunet-epoch=") for path in artifacts)
    png = Path(client.download_artifacts(run.info.run_id, "figures/confusion_matrix_val.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The server proxies artifacts to the S3 bucket.
    stored = mlflow_server.bucket.keys("mlartifacts/")  # type: ignore[attr-defined]
    assert any(key.endswith(f"artifacts/checkpoints/best_val_loss/{best.name}") for key in stored)

    # The best val_loss model, registered, predicts what its checkpoint predicts.
    (version,) = client.search_model_versions("name='odeon-test-model'")
    assert version.run_id == run.info.run_id
    assert version.description == (run_folder / "model_card.md").read_text()  # the card describes the model
    assert "models:/odeon-test-model/VERSION" in version.description
    # It takes raw pixels (the test split's scaling is inside) and gives what odeon predicted for the tile.
    model = mlflow.pytorch.load_model("models:/odeon-test-model/1")
    raw = torch.from_numpy(rasterio.open(test.images[0]).read())[None]
    assert raw.dtype == torch.uint8
    predicted = rasterio.open(run_folder / "predictions" / Path(test.images[0]).name).read()
    with torch.no_grad():
        assert np.allclose(model(raw)[0].numpy(), predicted, atol=1e-5)
    model_info = mlflow.models.get_model_info("models:/odeon-test-model/1")
    assert model_info.signature.inputs.inputs[0].type == np.dtype("uint8")
    # It says what it takes and gives (classes, colours, bands), and odeon predict maps images with it alone.
    assert model_info.metadata["class_labels"] == ["class 1", "class 2", "class 3"]
    assert model_info.metadata["image_bands"] == [1, 2, 3] and len(model_info.metadata["class_colors"]) == 3
    maps = tmp_path / "maps"
    arguments = ["--images", test.images[0], "--output-type", "float32", "--patch-size", "32"]
    assert cli.main(["predict", "--model", "models:/odeon-test-model/1", "--output", str(maps), *arguments]) == 0
    assert np.allclose(rasterio.open(maps / Path(test.images[0]).name).read(), predicted, atol=1e-5)


@pytest.fixture
def doomed_server(moto_server: MotoServer, tmp_path: Path) -> Iterator[MlflowServer]:
    bucket = new_bucket(moto_server.endpoint)
    server = MlflowServer(tmp_path / "doomed", moto_server.endpoint, bucket.url("mlartifacts"))
    yield server
    server.stop()


def test_the_training_survives_the_tracking_server_going_away(
    make_dataset: Callable[..., TinyDataset],
    doomed_server: MlflowServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", doomed_server.url)
    validations = []
    logged = MlflowOutput.log_metrics

    def then_stop_the_server(self: MlflowOutput, metrics: dict[str, float], step: int | None = None) -> None:
        logged(self, metrics, step)
        if any(name.startswith("val/") for name in metrics):
            validations.append(step)
            if len(validations) == 1:
                doomed_server.stop()

    monkeypatch.setattr(MlflowOutput, "log_metrics", then_stop_the_server)
    config = mlflow_config(make_dataset(n=8), str(tmp_path / "out"))
    config["train_setup"]["epochs"] = 3
    assert cli.main(["train", "-c", write_config(config, tmp_path)]) == 0
    err = capsys.readouterr().err.splitlines()

    run_folder = tmp_path / "out" / "exp" / "v"
    assert list(json.loads((run_folder / "history_val.json").read_text())) == ["0", "1", "2"]
    last = torch.load(run_folder / "odeon_val_loss_ckpt" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2
    warnings = [line for line in err if line.startswith("mlflow: cannot")]
    assert warnings == [
        f"mlflow: cannot log metrics at {doomed_server.url} (connection refused); the training goes "
        "on, and its end lists what was not logged"
    ]
    (summary,) = [line for line in err if line.startswith("mlflow: not logged")]
    assert "metric value(s)" in summary and "log the artifacts" in summary and "mark the run FINISHED" in summary


def test_a_resumed_training_continues_its_mlflow_run(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = mlflow_config(make_dataset(n=8), str(tmp_path / "out"))
    path = write_config(config, tmp_path)
    assert cli.main(["train", "-c", path]) == 0
    assert (
        cli.main(["train", "-c", path, "--set", "train_setup.epochs=3", "--set", "train_setup.continue_training=true"])
        == 0
    )
    # MLflow's fluent API writes MLFLOW_TRACKING_URI into the environment; the job leaves none behind for the
    # next training of the process or the processes it starts.
    assert "MLFLOW_TRACKING_URI" not in os.environ

    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    history = json.loads((tmp_path / "out" / "exp" / "v" / "history_val.json").read_text())
    assert history_of(client, run.info.run_id, "val/loss") == [entry["loss"] for entry in history.values()]
    assert len(history) == 3 and run.info.status == "FINISHED"
    assert run.data.params["train_setup.epochs"] == "2"  # parameters keep their first value
    assert {info.path for info in client.list_artifacts(run.info.run_id, "run")} >= {
        "run/config.json",
        *(f"run/{p.name}" for p in (tmp_path / "out" / "exp" / "v").glob("config_resumed_*")),
    }


def test_mlflow_required_stops_a_job_that_cannot_reach_it(
    make_dataset: Callable[..., TinyDataset],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlflow_server import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    url = f"http://127.0.0.1:{free_port()}"
    config = mlflow_config(make_dataset(n=8), str(tmp_path / "out"), mlflow_tracking_uri=url, mlflow_required=True)
    assert cli.main(["train", "-c", write_config(config, tmp_path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("odeon: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"odeon: error: MLflow at {url}: cannot start the run: ")
    assert not (tmp_path / "out" / "exp" / "v" / "history_val.json").exists()


def test_a_remote_output_folder_keeps_its_own_store(
    make_dataset: Callable[..., TinyDataset], bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "staging"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # (tempfile reads TMPDIR once)
    (tmp_path / "staging").mkdir()
    data = make_dataset(n=8)
    config = mlflow_config(data, bucket.url("runs"))
    assert cli.main(["train", "-c", write_config(config, tmp_path)]) == 0
    assert not [name for name in os.listdir(tmp_path / "staging") if name.startswith("odeon-")]  # nothing left

    keys = bucket.keys("runs/exp/v/")
    assert "runs/exp/v/mlflow.db" in keys
    assert any(key.startswith("runs/exp/v/mlflow-artifacts/") and key.endswith("history_val.json") for key in keys)
    store = tmp_path / "downloaded.db"
    store.write_bytes(bucket.get("runs/exp/v/mlflow.db"))
    assert sqlite3.connect(store).execute("pragma integrity_check").fetchone() == ("ok",)
    client = MlflowClient(f"sqlite:///{store}")
    (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert run.info.status == "FINISHED" and len(history_of(client, run.info.run_id, "val/loss")) == 2


def test_names_parameters_and_tags() -> None:
    assert metric_name("bâtiment/IoU") == "bâtiment/IoU"
    assert metric_name("a:b (c)") == "a_b _c_"
    params = flatten({"a": {"b": [1, 2], "c": "https://user:secret@host.example/x.json", "d": "x" * 7000}})
    assert params["a.b"] == "[1, 2]" and "secret" not in params["a.c"] and params["a.c"].endswith("/x.json")
    assert len(params["a.d"]) == 6000
    assert redact("s3://bucket/key") == "s3://bucket/key"
    tags = environment_tags(
        {
            "CI_COMMIT_SHA": "abc",
            "CI_PIPELINE_ID": "42",
            "HOSTNAME": "job-master-0",
            "KUBERNETES_SERVICE_HOST": "10.0.0.1",
            "ODEON_JOB_NAME": "ocsge",
        }
    )
    assert tags == {
        "mlflow.source.git.commit": "abc",
        "ci.pipeline_id": "42",
        "k8s.pod": "job-master-0",
        "k8s.job": "ocsge",
    }


# --- odeon validate --services (the Helm chart's test hook) ------------------------------------------


def test_validate_services_reaches_the_server_and_the_output_folder(
    make_dataset: Callable[..., TinyDataset],
    mlflow_server: MlflowServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = make_dataset(n=6)
    config = make_config(
        data.csv, str(tmp_path / "out"), output_setup={"use_mlflow": True, "mlflow_tracking_uri": mlflow_server.url}
    )
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert cli.main(["validate", "-c", str(tmp_path / "c.json"), "--rows", "1", "--services"]) == 0
    out = capsys.readouterr().out
    assert f"writable; MLflow at {mlflow_server.url}: answers" in out and "OK: 2 samples checked" in out
    assert list((tmp_path / "out").iterdir()) == []  # the write probe is removed


def test_validate_services_names_a_server_that_does_not_answer(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_dataset(n=6)
    url = f"http://127.0.0.1:{free_port()}"
    config = make_config(data.csv, str(tmp_path / "out"), output_setup={"use_mlflow": True, "mlflow_tracking_uri": url})
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert cli.main(["validate", "-c", str(tmp_path / "c.json"), "--rows", "1", "--services"]) == 2
    assert (
        f"odeon: error: output_setup.mlflow_tracking_uri: MLflow at {url} does not answer: connection refused"
        in capsys.readouterr().err
    )


SENTINEL = "S3ntinelPassw0rd"


def _files_holding(folder: Path, needle: bytes) -> list[str]:
    return [str(path) for path in folder.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_credentials_in_urls_reach_no_output(
    make_dataset: Callable[..., TinyDataset],
    mlflow_server: MlflowServer,
    moto_server: MotoServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tracking URI with user:password@ is used as given, but the password appears in no console line
    (ours and MLflow's), no file of the run folder (configs, run record, checkpoints, .pth, TensorBoard),
    no MLflow parameter, tag or artifact; URLs with credentials in errors are redacted too."""
    from mlflow import MlflowClient

    use_s3_endpoint(monkeypatch, moto_server.endpoint)
    data = make_dataset(n=6)
    uri = mlflow_server.url.replace("http://", f"http://odeon:{SENTINEL}@")
    config = mlflow_config(
        data,
        str(tmp_path / "out"),
        mlflow_tracking_uri=uri,
        use_tensorboard=True,
        registered_model_name="sentinel-model",
        version_name="sentinel",
    )
    config["train_setup"]["export_checkpoint"] = ".pth"
    path = write_config(config, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "odeon_job", "train", "-v", "-c", path],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert SENTINEL not in result.stdout + result.stderr
    assert "http://***@127.0.0.1" in result.stderr  # the URL is shown, redacted
    run_folder = tmp_path / "out" / "exp" / "sentinel"
    assert _files_holding(run_folder, SENTINEL.encode()) == []
    assert len(list(run_folder.rglob("*.ckpt"))) >= 2  # there was something to search
    assert _files_holding(mlflow_server.folder, SENTINEL.encode()) == []  # the server's store (SQLite)
    bucket = mlflow_server.bucket  # type: ignore[attr-defined]
    artifacts = bucket.keys("mlartifacts/")
    assert artifacts and not [key for key in artifacts if SENTINEL.encode() in bucket.get(key)]
    record = json.loads((run_folder / "mlflow_run.json").read_text())
    run = MlflowClient(mlflow_server.url).get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["output_setup.mlflow_tracking_uri"] == mlflow_server.url.replace("http://", "http://***@")

    # Errors: a config URL, a CSV row and an object-store URL with credentials.
    csv = tmp_path / "bad.csv"
    csv.write_text(f"https://u:{SENTINEL}@127.0.0.1:9/a.tif,b.tif\n" * 4)
    bad = mlflow_config(data, str(tmp_path / "out"), use_mlflow=False)
    bad["data_source"]["train_file"] = str(csv)
    s3_output = mlflow_config(data, f"s3://AKIA:{SENTINEL}@bucket/runs", use_mlflow=False)
    for args in (
        ["-c", f"http://u:{SENTINEL}@127.0.0.1:9/config.json"],
        ["-c", write_config(bad, tmp_path / "out")],
        ["-v", "-c", write_config(s3_output, tmp_path)],
    ):
        failed = subprocess.run(
            [sys.executable, "-m", "odeon_job", "train", *args], capture_output=True, text=True, timeout=300
        )
        assert failed.returncode == 2 and "odeon: error: " in failed.stderr, failed.stderr[-2000:]
        assert SENTINEL not in failed.stdout + failed.stderr


def test_lightning_closes_the_mlflow_run_failed_when_the_training_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is the MLflow logger's: opened by Lightning at the start of the training, closed FAILED when a
    step fails (here a loss that overflows), with nothing left RUNNING."""
    from mlflow import MlflowClient

    from odeon_job.config import config_from_dict
    from odeon_job.errors import DataError
    from odeon_job.tasks.train import train

    from conftest import overflowing_dataset

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    csv = overflowing_dataset(tmp_path)
    config = make_config(
        csv,
        str(tmp_path / "out"),
        data_source={"image_max_value": 1, "val_file": csv},
        train_setup={"batch_size": 4},
        output_setup={"use_mlflow": True},
    )
    with pytest.raises(DataError):
        train(config_from_dict(config))
    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert run.info.status == "FAILED"


# --- the local store survives a kill -9 while it is being created ----------------------------------------------

_START_THE_RUN = """
import sys
from odeon_job.config import config_from_dict
from odeon_job.outputs.loggers.mlflow import MlflowOutput
from odeon_job.outputs.run_folder import RunFolder
config = config_from_dict({config!r})
MlflowOutput(config, RunFolder.of(config), resuming=False, test_follows=False).start()
print("started", flush=True)
"""


def test_a_kill_while_the_local_store_is_created_never_breaks_it(tmp_path: Path) -> None:
    """MLflow builds a new SQLite store in place over seconds: a kill -9 in between left a database every later
    start failed on (an SQLAlchemy error), and a restarted pod crash-looped. Killed at moments spread over the
    creation, the next start always opens the store and records its run."""
    from mlflow import MlflowClient

    from odeon_job.config import config_from_dict
    from odeon_job.outputs.run_folder import RunFolder

    csv = tmp_path / "t.csv"  # read once the store is open: its digest and rows are the run's dataset input
    csv.write_text("a.tif,a_mask.tif\n")
    for number, moment in enumerate((0.05, 0.45, 0.85, 1.25)):
        # (a folder each: MLflow keeps the stores a process opened, by URI)
        out = tmp_path / f"out{number}"
        config = make_config(str(csv), str(out), output_setup={"use_mlflow": True, "mlflow_required": True})
        child = subprocess.Popen(
            [sys.executable, "-c", _START_THE_RUN.format(config=config)],
            stderr=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        while not list(out.glob("mlflow.db*")):  # the store's file appears: its building starts
            assert child.poll() is None, "the run started without creating a store"
            time.sleep(0.01)
        time.sleep(moment)
        child.send_signal(signal.SIGKILL)
        child.wait()
        job = config_from_dict(config)
        output = MlflowOutput(job, RunFolder.of(job), resuming=False, test_follows=False)
        output.start()  # mlflow_required: any failure to open the store raises
        assert output.run_id is not None, moment
        client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
        assert client.get_run(output.run_id).info.status == "RUNNING", moment
        assert not list(out.glob("mlflow.db.*.part*")), moment  # no half-built store left beside it


def test_a_half_built_store_with_no_run_is_built_again_and_one_with_runs_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store an earlier version left half-migrated (its schema behind MLflow's) fails every start: rebuilt when it
    holds no run (moved aside, journal included), refused with one line naming the fix when it holds runs."""
    from mlflow import MlflowClient

    from odeon_job.errors import ConfigError
    from odeon_job.outputs.loggers.sqlite_store import ensure_store

    path = tmp_path / "mlflow.db"
    ensure_store(str(path), str(tmp_path / "artifacts"))

    def set_back() -> None:
        with sqlite3.connect(path) as connection:
            connection.execute("update alembic_version set version_num = '451aebb31d03'")

    set_back()
    with caplog.at_level("WARNING", logger="odeon"):
        ensure_store(str(path), str(tmp_path / "artifacts"))
    assert "was left half-built" in caplog.text and "holds no run; moved aside" in caplog.text
    assert len(list(tmp_path.glob("mlflow.db.broken-*"))) == 1
    client = MlflowClient(f"sqlite:///{path}")
    client.create_run(client.create_experiment("e"))
    set_back()
    with pytest.raises(
        ConfigError,
        match=r"the MLflow store .*mlflow\.db holds 1 run\(s\) but MLflow cannot open it "
        r"\(.*\): upgrade it \(mlflow db upgrade sqlite:///",
    ):
        ensure_store(str(path), str(tmp_path / "artifacts"))
    assert path.exists()
