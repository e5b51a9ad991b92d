"""The job against a real S3 endpoint on loopback (moto's server): configs, CSVs and rasters read from
S3, every output written there, resuming from it, streaming, retries, and each permanent error."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from odeon_job import storage
from odeon_job.commands import cli
from odeon_job.config import load_config
from odeon_job.data import raster
from odeon_job.errors import DataError, StorageError
from odeon_job.storage import retries, s3_settings

from conftest import Scenes, TinyDataset, make_config, use_s3_endpoint
from s3_server import Bucket, CountingProxy, MotoServer, new_bucket


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def upload_dataset(bucket: Bucket, data: TinyDataset, prefix: str) -> str:
    """The dataset's files under ``prefix``; its CSV keeps relative paths. Returns the CSV's URL."""
    bucket.upload_folder(data.folder, prefix)
    return bucket.url(f"{prefix}/{Path(data.csv).name}")


def run_cli(*args: str) -> int:
    return cli.main(list(args))


# --- a training entirely on S3 ----------------------------------------------------------------------------


@pytest.mark.slow
def test_training_reads_and_writes_only_s3_and_resumes_from_it(
    make_dataset: Callable[..., TinyDataset], bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_csv = upload_dataset(bucket, make_dataset(n=8), "ds")
    test_csv = upload_dataset(bucket, make_dataset(n=2, name="test", seed=1), "testds")
    config = make_config(
        train_csv,
        bucket.url("runs"),
        data_source={"test_file": test_csv},
        train_setup={"epochs": 2},
        output_setup={"save_top_k": 1, "get_prediction": True, "use_tensorboard": True},
        device_setup={"num_workers": 1},
    )
    config_url = bucket.put_json("configs/train.json", config)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)

    assert run_cli("train", "-c", config_url) == 0

    assert list(workdir.iterdir()) == []  # nothing written locally
    run = "runs/exp/v/"
    keys = [key.removeprefix(run) for key in bucket.keys(run)]
    assert {"config.json", "history_val.json", "history_test.json", "odeon_val_loss_ckpt/last.ckpt"} <= set(keys)
    assert len([k for k in keys if k.startswith("odeon_val_loss_ckpt/lightunet-epoch=")]) == 1
    assert len([k for k in keys if k.startswith("odeon_val_miou_ckpt/lightunet-epoch=")]) == 1
    assert sorted(k for k in keys if k.startswith("predictions/")) == ["predictions/0.tif", "predictions/1.tif"]
    for split in ("train", "val", "test"):
        assert any(k.startswith(f"tensorboard/{split}/events.out.tfevents.") for k in keys), split
    assert json.loads(bucket.get(run + "config.json"))["output_setup"]["output_folder"] == bucket.url("runs")
    assert list(json.loads(bucket.get(run + "history_val.json"))) == ["0", "1"]
    with rasterio.open(storage.gdal_path(bucket.url(run + "predictions/0.tif"))) as prediction:
        assert prediction.crs is not None and prediction.count == 3

    # TensorBoard sees one run per split, with one validation point per epoch, from the uploaded files.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    val_events = EventAccumulator(str(bucket.download_folder(run + "tensorboard/val", tmp_path / "tb"))).Reload()
    assert [event.step for event in val_events.Scalars("loss")] == [3, 6]  # 6 samples in batches of 2, 2 epochs

    # Resume the same run from what is in the bucket: two more epochs.
    last_before = bucket.get(run + "odeon_val_loss_ckpt/last.ckpt")
    assert (
        run_cli(
            "train", "-c", config_url, "--set", "train_setup.epochs=4", "--set", "train_setup.continue_training=true"
        )
        == 0
    )
    assert list(json.loads(bucket.get(run + "history_val.json"))) == ["0", "1", "2", "3"]
    keys_after = [key.removeprefix(run) for key in bucket.keys(run)]
    assert any(k.startswith("config_resumed_") for k in keys_after)
    assert "odeon_val_loss_ckpt/last.ckpt" in keys_after  # the checkpoint it resumed from is kept (and renewed)
    last_after = torch.load(io.BytesIO(bucket.get(run + "odeon_val_loss_ckpt/last.ckpt")), weights_only=True)
    assert last_after["epoch"] == 3 and bucket.get(run + "odeon_val_loss_ckpt/last.ckpt") != last_before
    assert len([k for k in keys_after if k.startswith("odeon_val_loss_ckpt/lightunet-epoch=")]) == 1  # top-1 kept
    assert list(workdir.iterdir()) == []


@pytest.mark.slow
def test_a_killed_training_resumes_from_what_reached_s3(
    make_dataset: Callable[..., TinyDataset], bucket: Bucket, tmp_path: Path
) -> None:
    """SIGKILL (no chance to clean up) once three epochs are in the history; the restarted job loses nothing
    but the epoch in progress."""
    csv = upload_dataset(bucket, make_dataset(n=8), "ds")
    config_url = bucket.put_json(
        "c.json",
        make_config(csv, bucket.url("runs"), train_setup={"epochs": 200}, output_setup={"use_tensorboard": False}),
    )
    history_key = "runs/exp/v/history_val.json"
    job = subprocess.Popen(
        [sys.executable, "-m", "odeon_job", "train", "-c", config_url],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 1200  # against a hang only: a loaded machine may be many times slower
        while not (history_key in bucket.keys("runs") and len(json.loads(bucket.get(history_key))) >= 3):
            assert job.poll() is None, job.stderr.read() if job.stderr else ""
            assert time.monotonic() < deadline, "the training wrote no history in twenty minutes"
            time.sleep(0.05)
    finally:
        job.kill()
        job.wait()
    before = json.loads(bucket.get(history_key))
    saved = torch.load(io.BytesIO(bucket.get("runs/exp/v/odeon_val_loss_ckpt/last.ckpt")), weights_only=True)
    assert saved["epoch"] >= 1  # the last complete validation's checkpoint is whole

    epochs = saved["epoch"] + 3
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "odeon_job",
            "train",
            "-c",
            config_url,
            "--set",
            f"train_setup.epochs={epochs}",
            "--set",
            "train_setup.continue_training=true",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = json.loads(bucket.get(history_key))
    assert list(after) == [str(epoch) for epoch in range(epochs)]
    for epoch in range(saved["epoch"] + 1):  # the epochs the checkpoint holds are kept as they were
        assert after[str(epoch)] == before[str(epoch)]


def test_a_resumed_run_never_deletes_the_checkpoint_it_resumed_from() -> None:
    """Lightning keeps it for local files only (pytorch-lightning#21813); on s3:// it deleted it."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from odeon_job.outputs.callbacks.checkpoints import ExportingCheckpoint

    resumed = "s3://bucket/runs/exp/v/odeon_val_loss_ckpt/model-epoch=1-val_loss=0.5000.ckpt"
    trainer = type("Trainer", (), {"ckpt_path": resumed})()
    newer = "s3://bucket/runs/exp/v/odeon_val_loss_ckpt/model-epoch=2-val_loss=0.4000.ckpt"
    ours = ExportingCheckpoint(dirpath="s3://bucket/runs/exp/v/odeon_val_loss_ckpt")
    stock = ModelCheckpoint(dirpath="s3://bucket/runs/exp/v/odeon_val_loss_ckpt")
    assert stock._should_remove_checkpoint(trainer, resumed, newer)  # the reported behaviour
    assert not ours._should_remove_checkpoint(trainer, resumed, newer)
    older = "s3://bucket/runs/exp/v/odeon_val_loss_ckpt/model-epoch=0-val_loss=0.6000.ckpt"
    assert ours._should_remove_checkpoint(trainer, older, newer)  # top-k still drops the others
    assert not ours._should_remove_checkpoint(trainer, "s3://bucket/elsewhere/model.ckpt", newer)


# --- configuration sources --------------------------------------------------------------------------------


def test_config_from_s3_stdin_and_https_with_overrides(
    make_dataset: Callable[..., TinyDataset],
    bucket: Bucket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = make_dataset(n=4)
    train_csv = upload_dataset(bucket, data, "ds")
    config = make_config(train_csv, bucket.url("runs"))
    url = bucket.put_json("c.json", config)

    assert run_cli("validate", "-c", url) == 0
    assert "OK: 4 samples checked" in capsys.readouterr().out  # every row's rasters opened through /vsis3/

    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(config)))
    assert run_cli("validate", "-c", "-", "--set", "train_setup.epochs=7") == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert run_cli("validate", "-c", "-") == 2
    assert "odeon: error: -c -: the standard input is empty" in capsys.readouterr().err

    (tmp_path / "c.json").write_text(json.dumps(config))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        loaded = load_config(f"{base}/c.json", ["train_setup.epochs=3", "train_setup.model_name=unet"])
        assert (loaded.train_setup.epochs, loaded.train_setup.model_name) == (3, "unet")
        with pytest.raises(StorageError, match=f"^{base}/missing.json: not found"):
            load_config(f"{base}/missing.json")
        # The data over plain HTTPS-style URLs too: the CSV through fsspec, the rasters through /vsicurl/.
        assert (
            run_cli(
                "validate",
                "-c",
                f"{base}/c.json",
                "--set",
                f"data_source.train_file={base}/ds/samples.csv",
                "--set",
                f"output_setup.output_folder={tmp_path / 'runs'}",
            )
            == 0
        )
        assert "OK: 4 samples checked" in capsys.readouterr().out
    finally:
        server.shutdown()
        server.server_close()

    monkeypatch.setenv("ODEON_CONFIG", url)
    assert run_cli("validate", "--set", "train_setup.epoch=3") == 2
    assert (
        f"odeon: error: {url} with --set: train_setup.epoch: unknown key (did you mean 'epochs'?)"
        in capsys.readouterr().err
    )


# --- streaming, retries, the stale cache ------------------------------------------------------------------


def test_one_window_of_a_large_tiled_geotiff_on_s3_moves_a_fraction_of_it(
    bucket: Bucket, proxy: CountingProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "large.tif"
    pixels = np.random.default_rng(0).integers(0, 255, (3, 2048, 2048), dtype=np.uint8)  # incompressible
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=2048,
        height=2048,
        count=3,
        dtype="uint8",
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    ) as dst:
        dst.write(pixels)
    url = bucket.put("large.tif", path.read_bytes())
    size = path.stat().st_size
    use_s3_endpoint(monkeypatch, proxy.endpoint)

    with raster.open_raster(url, "test") as src:
        window = src.read(window=Window(512, 256, 256, 256))
    assert np.array_equal(window, pixels[:, 256:512, 512:768])
    assert size > 12_000_000
    assert proxy.bytes_served < size / 20, (proxy.bytes_served, size)  # header + one tile, not the object
    assert all(method == "GET" and byte_range for method, _, byte_range in proxy.requests if "large.tif" in _)


def test_a_training_tile_comes_in_one_request_a_metadata_open_in_a_small_one(
    bucket: Bucket, proxy: CountingProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from odeon_job.data.dataset import SegmentationDataset
    from odeon_job.data.samples import Sample
    from odeon_job.data.spec import DataSpec

    image = np.random.default_rng(0).integers(0, 255, (3, 200, 200), dtype=np.uint8)  # 120 KB, incompressible
    urls = []
    for name, pixels in (("img.tif", image), ("msk.tif", np.zeros((1, 200, 200), np.uint8))):
        with rasterio.open(
            tmp_path / name,
            "w",
            driver="GTiff",
            width=200,
            height=200,
            count=len(pixels),
            dtype="uint8",
            tiled=True,
            blockxsize=64,
            blockysize=64,
        ) as dst:
            dst.write(pixels)
        urls.append(bucket.put(name, (tmp_path / name).read_bytes()))
    assert (tmp_path / "img.tif").stat().st_size > 100_000
    use_s3_endpoint(monkeypatch, proxy.endpoint)
    spec = DataSpec(
        image_bands=(1, 2, 3),
        mask_bands=(1,),
        class_labels=("a", "b"),
        mask_encoding="class_index",
        image_max_value=None,
        resolution={"train": None},
    )
    item = SegmentationDataset([Sample(urls[0], urls[1], "row 1")], spec, "train")[0]
    assert np.array_equal(item["image"].numpy(), image)
    assert [path.rsplit("/", 1)[-1] for _, path, _ in proxy.requests] == ["img.tif", "msk.tif"]  # one GET each

    proxy.clear()
    raster.clear_remote_cache()
    assert raster.raster_info(urls[0], "row 1").count == 3  # what odeon validate does for every row
    assert [byte_range for _, _, byte_range in proxy.requests] == ["bytes=0-16383"]


def test_transient_failures_are_retried_and_counted(
    bucket: Bucket, proxy: CountingProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = bucket.put("notes.txt", "hello")
    tif = tmp_path / "t.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint8") as dst:
        dst.write(np.full((1, 16, 16), 7, np.uint8))
    tif_url = bucket.put("t.tif", tif.read_bytes())
    use_s3_endpoint(monkeypatch, proxy.endpoint)
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")  # GDAL's own variable overrides our default
    before = retries.transient_retries()

    proxy.fail_next(2)
    assert storage.read_text(url) == "hello"
    assert retries.transient_retries() - before == 2
    proxy.fail_next(2)
    with raster.open_raster(tif_url, "test") as src:
        assert int(src.read()[0, 0, 0]) == 7
    assert retries.transient_retries() - before == 4


def test_every_injected_failure_of_a_training_with_workers_is_retried_and_counted_once(
    make_dataset: Callable[..., TinyDataset],
    bucket: Bucket,
    proxy: CountingProxy,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every 5th request to S3 fails with 503 during a training that reads through 2 DataLoader workers and
    writes its run to S3: the run succeeds and the retry count it prints is the number of failures injected.
    (Workers forked with GDAL's open connections shared them: a retry read a sibling's response, "CURL error:
    Invalid status line", and the count fell short of the faults.)"""
    csv = upload_dataset(bucket, make_dataset(n=12), "ds")
    config = make_config(csv, bucket.url("runs"), train_setup={"epochs": 2}, device_setup={"num_workers": 2})
    _train_through_faults(config, proxy, 5, monkeypatch, caplog)


def _train_through_faults(
    config: dict, proxy: CountingProxy, period: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Train with every ``period``-th request through ``proxy`` failing (503); the run must count each retry once."""
    from odeon_job.config import config_from_dict
    from odeon_job.tasks.train import train

    use_s3_endpoint(monkeypatch, proxy.endpoint)
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")
    proxy.fail_period = period
    before = retries.transient_retries()
    with caplog.at_level("WARNING", logger="odeon"):
        train(config_from_dict(config))
    proxy.fail_period = 0
    assert proxy.failures_injected > 5
    assert retries.transient_retries() - before == proxy.failures_injected
    assert f"storage: {proxy.failures_injected} transient failure(s) were retried" in caplog.text


def test_every_injected_failure_of_a_scene_training_is_counted_once(
    make_scenes: Callable[..., Scenes],
    bucket: Bucket,
    proxy: CountingProxy,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Scenes read in windows, kept open by 2 DataLoader workers, stitched and put on S3, every 7th request
    failing: GDAL retries the byte ranges of a read inside the read, where rasterio logs its warnings under
    another logger (and in other words, "Request for ... failed with response_code=503"): 12 faults were counted
    as 5. Every retry of every layer (GDAL, botocore, s3fs) is counted once."""
    scenes = make_scenes(sizes=((512, 512), (384, 640)), block=128)
    bucket.upload_folder(scenes.folder, "scenes")
    csv = bucket.url("scenes/scenes.csv")
    config = make_config(
        csv,
        bucket.url("runs"),
        data_source={"val_file": csv, "test_file": csv, "patch_size": 128, "class_labels": ["a", "b", "c"]},
        output_setup={"get_prediction": True},
        device_setup={"num_workers": 2},
    )
    _train_through_faults(config, proxy, 7, monkeypatch, caplog)


def test_a_rewritten_object_is_read_anew_after_clearing_gdals_cache(bucket: Bucket) -> None:
    def put(value: int) -> str:
        with rasterio.MemoryFile() as memory:
            with memory.open(driver="GTiff", width=8, height=8, count=1, dtype="uint8") as dst:
                dst.write(np.full((1, 8, 8), value, np.uint8))
            return bucket.put("same-key.tif", memory.read())

    def first_pixel(url: str) -> int:
        with raster.open_raster(url, "test") as src:
            return int(src.read()[0, 0, 0])

    url = put(1)
    assert first_pixel(url) == 1
    put(2)
    assert first_pixel(url) == 1  # GDAL's trap: the old bytes, even in a new dataset
    raster.clear_remote_cache()
    assert first_pixel(url) == 2


def test_a_staged_file_goes_up_and_comes_back_streamed_and_whole(bucket: Bucket, tmp_path: Path) -> None:
    """put_file and get_file, the one way staged files (event files, a run's MLflow store, stitched predictions)
    travel: the bytes arrive whole; a missing object is named."""
    local = tmp_path / "staged.bin"
    local.write_bytes(os.urandom(3 << 20))
    url = bucket.url("staged/one.bin")
    storage.put_file(str(local), url)
    back = tmp_path / "back.bin"
    storage.get_file(url, str(back))
    assert back.read_bytes() == local.read_bytes()
    with pytest.raises(StorageError, match="missing.bin"):
        storage.get_file(bucket.url("staged/missing.bin"), str(tmp_path / "none.bin"))


# --- permanent errors: one line naming the URL and the cause, exit 2 --------------------------------------


def test_missing_bucket_key_and_raster_are_named(
    make_dataset: Callable[..., TinyDataset], bucket: Bucket, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("train", "-c", "s3://no-such-bucket-odeon/c.json") == 2
    assert capsys.readouterr().err == "odeon: error: s3://no-such-bucket-odeon/c.json: the bucket does not exist\n"
    assert run_cli("train", "-c", bucket.url("missing.json")) == 2
    assert capsys.readouterr().err == f"odeon: error: {bucket.url('missing.json')}: not found\n"

    data = make_dataset(n=4)
    os.remove(data.images[2])
    csv = upload_dataset(bucket, data, "ds")
    url = bucket.put_json("c.json", make_config(csv, bucket.url("runs")))
    assert run_cli("validate", "-c", url) == 2
    err = capsys.readouterr().err
    assert f"odeon: error: {csv} row 3: cannot open {bucket.url('ds/img/2.tif')}" in err
    assert bucket.keys("runs") == []


@pytest.fixture
def signed_requests_only(moto_server: MotoServer) -> object:
    moto_server.require_signed_requests(True)
    yield
    moto_server.require_signed_requests(False)


def test_credentials_and_permissions_errors(
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    make_dataset: Callable[..., TinyDataset],
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    import boto3
    import s3fs

    use_s3_endpoint(monkeypatch, moto_server.endpoint)
    bucket = new_bucket(moto_server.endpoint)
    csv = upload_dataset(bucket, make_dataset(n=4), "ds")
    url = bucket.put_json("c.json", make_config(csv, bucket.url("runs")))
    iam = boto3.client(
        "iam",
        endpoint_url=moto_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    iam.create_user(UserName=f"reader-{bucket.name}")
    key = iam.create_access_key(UserName=f"reader-{bucket.name}")["AccessKey"]
    read_only = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket.name}", f"arn:aws:s3:::{bucket.name}/*"],
            }
        ],
    }
    iam.put_user_policy(UserName=f"reader-{bucket.name}", PolicyName="read-only", PolicyDocument=json.dumps(read_only))
    request.getfixturevalue("signed_requests_only")

    def as_user(key_id: str | None, secret: str | None = None) -> None:
        for name, value in (("AWS_ACCESS_KEY_ID", key_id), ("AWS_SECRET_ACCESS_KEY", secret)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()

    as_user("AKIAUNKNOWN", "wrong")  # 403: unknown key
    assert run_cli("train", "-c", url) == 2
    assert capsys.readouterr().err == f"odeon: error: {url}: cannot read: access denied (Forbidden)\n"

    as_user(None)  # no credentials anywhere
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(Path(os.devnull)))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(Path(os.devnull)))
    assert run_cli("train", "-c", url) == 2
    assert capsys.readouterr().err.startswith(
        f"odeon: error: {url}: cannot read: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )

    as_user(key["AccessKeyId"], key["SecretAccessKey"])  # may read, may not write the outputs
    assert run_cli("train", "-c", url) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("odeon: error:")]
    assert errors == [f"odeon: error: {bucket.url('runs/exp/v/config.json')}: cannot write: access denied"]


def test_rasters_on_unsupported_schemes_and_gdal_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StorageError, match="rasters cannot be read from 'ftp://' URLs"):
        storage.gdal_path("ftp://host/a.tif")
    assert storage.gdal_path("gs://b/k/a.tif") == "/vsigs/b/k/a.tif"
    assert storage.gdal_path("az://c/a.tif") == "/vsiaz/c/a.tif"
    assert storage.gdal_path("https://h/a.tif") == "/vsicurl/https://h/a.tif"
    env = {"AWS_ENDPOINT_URL": "https://minio.example:9000", "AWS_ENDPOINT_URL_S3": "http://ceph.local:7480/"}
    assert s3_settings.gdal_s3_options(env) == {
        "AWS_S3_ENDPOINT": "ceph.local:7480",
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }
    assert s3_settings.gdal_s3_options({**env, "AWS_VIRTUAL_HOSTING": "TRUE"})["AWS_S3_ENDPOINT"] == "ceph.local:7480"
    assert "AWS_VIRTUAL_HOSTING" not in s3_settings.gdal_s3_options({**env, "AWS_VIRTUAL_HOSTING": "TRUE"})
    assert s3_settings.gdal_s3_options({}) == {}
    options = s3_settings.fsspec_s3_options({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-3"})
    assert options == {
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-3"},
        "config_kwargs": {
            "s3": {"addressing_style": "path"},
            "retries": {"mode": "standard", "max_attempts": s3_settings.S3_MAX_ATTEMPTS},
        },
    }
    assert "retries" not in s3_settings.fsspec_s3_options({"AWS_MAX_ATTEMPTS": "3"}).get("config_kwargs", {})
    monkeypatch.setenv("GDAL_CACHEMAX", "64")
    assert "GDAL_CACHEMAX" not in raster.gdal_options()  # the environment's value stands
    with pytest.raises(DataError):
        raster.open_raster("/nonexistent/a.tif", "row 1")


def test_validate_services_names_an_output_bucket_that_does_not_exist(
    make_dataset: Callable[..., TinyDataset], bucket: Bucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(make_dataset(n=4).csv, "s3://no-such-bucket/runs")
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert run_cli("validate", "-c", str(tmp_path / "c.json"), "--services") == 2
    assert "odeon: error: output_setup.output_folder: s3://no-such-bucket/runs/.odeon-probe-" in capsys.readouterr().err
