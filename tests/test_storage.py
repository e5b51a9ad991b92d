from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from odeon_job import storage
from odeon_job.errors import StorageError


@pytest.mark.parametrize(
    ("path", "base", "expected"),
    [
        ("img/a.tif", "s3://bucket/ds", "s3://bucket/ds/img/a.tif"),
        ("../img/a.tif", "s3://bucket/ds/csv", "s3://bucket/ds/img/a.tif"),
        ("img/a.tif", "/data/ds", "/data/ds/img/a.tif"),
        ("../img/a.tif", "/data/ds/csv", "/data/ds/img/a.tif"),
        ("img/a.tif", "", "img/a.tif"),
        ("/abs/a.tif", "s3://bucket/ds", "/abs/a.tif"),
        ("s3://other/a.tif", "/data", "s3://other/a.tif"),
        ("file:///abs/a.tif", "/data", "/abs/a.tif"),
        ("https://host/a.tif", "s3://bucket", "https://host/a.tif"),
    ],
)
def test_resolve_keeps_urls_and_resolves_relative_paths_against_the_folder(path: str, base: str, expected: str) -> None:
    assert storage.resolve(path, base) == expected


@pytest.mark.parametrize(
    ("url", "folder"),
    [
        ("s3://bucket/ds/train.csv", "s3://bucket/ds"),
        ("s3://bucket/train.csv", "s3://bucket"),
        ("/data/ds/train.csv", "/data/ds"),
        ("train.csv", ""),
        ("file:///data/train.csv", "/data"),
    ],
)
def test_parent(url: str, folder: str) -> None:
    assert storage.parent(url) == folder


def test_join_keeps_the_scheme() -> None:
    assert storage.join("s3://bucket/out/", "exp", "v1") == "s3://bucket/out/exp/v1"
    assert storage.join("/out", "exp", "v1") == os.path.join("/out", "exp", "v1")


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("/data/a.tif", "/data/a.tif"),
        ("file:///data/a.tif", "/data/a.tif"),
        ("s3://bucket/k/a.tif", "/vsis3/bucket/k/a.tif"),
        ("gs://bucket/a.tif", "/vsigs/bucket/a.tif"),
        ("az://container/a.tif", "/vsiaz/container/a.tif"),
        ("https://host/a.tif", "/vsicurl/https://host/a.tif"),
    ],
)
def test_gdal_path_streams_remote_rasters(url: str, path: str) -> None:
    assert storage.gdal_path(url) == path


def test_gdal_path_refuses_unknown_schemes() -> None:
    with pytest.raises(StorageError, match="ftp://host/a.tif: rasters cannot be read from 'ftp://' URLs"):
        storage.gdal_path("ftp://host/a.tif")


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "history.json"
    storage.write_text(str(target), "one")
    storage.write_text(str(target), "two")
    assert target.read_text() == "two"
    assert os.listdir(target.parent) == ["history.json"]


def test_a_failed_write_keeps_the_previous_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "history.json"
    storage.write_text(str(target), "complete")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StorageError, match="history.json: cannot write: No space left on device"):
        storage.write_text(str(target), "partial")
    assert target.read_text() == "complete"
    assert os.listdir(tmp_path) == ["history.json"]


def test_read_errors_name_the_url(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=f"^{tmp_path}/missing.csv: not found$"):
        storage.read_text(str(tmp_path / "missing.csv"))
    with pytest.raises(StorageError, match="is a folder, not a file"):
        storage.read_text(str(tmp_path))
    (tmp_path / "latin1.csv").write_bytes("é,à\n".encode("latin-1"))
    with pytest.raises(StorageError, match="latin1.csv: not UTF-8 text"):
        storage.read_text(str(tmp_path / "latin1.csv"))


def test_unknown_protocol_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="nosuch://x/y.csv: cannot open"):
        storage.read_text("nosuch://x/y.csv")


def test_nonempty_folder(tmp_path: Path) -> None:
    assert not storage.is_nonempty_folder(str(tmp_path / "absent"))
    assert not storage.is_nonempty_folder(str(tmp_path))
    (tmp_path / "f").write_text("x")
    assert storage.is_nonempty_folder(str(tmp_path))


def test_remove(tmp_path: Path) -> None:
    target = tmp_path / "export.pth"
    target.write_bytes(b"x")
    storage.remove(str(target))
    assert not target.exists()
    storage.remove(str(target))  # already gone: nothing to do


@pytest.mark.parametrize(
    "path, base",
    [
        ("img/a.tif", "/data/ds"),
        ("./img/a.tif", "/data/ds"),
        ("../x/a.tif", "/data/ds"),
        ("img//a.tif", "/data/ds"),
        ("/abs/a.tif", "/data/ds"),
        ("s3://b/k.tif", "/data/ds"),
        ("img/a.tif", "s3://bucket/ds"),
        ("../img/a.tif", "s3://bucket/ds/sub"),
        ("img/a.tif", "data"),
        ("img/a.tif", "."),
        ("img/a.tif", "./data"),
        ("img/a.tif", ""),
        ("img/a.tif", "file:///data/ds"),
        ("img/a.tif", "/"),
        ("a.tif", "https://h.example/ds/"),
        ("img/./a.tif", "s3://bucket/ds"),
    ],
)
def test_the_csv_resolver_resolves_as_resolve_does(path: str, base: str) -> None:
    assert storage.resolver(base)(path) == storage.resolve(path, base)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_get_the_mode_the_umask_gives_open(tmp_path: Path, umask: int) -> None:
    """Results on shared storage are readable by the team: a written file gets 0666 less the umask, as
    ``open()`` gives, not the 0600 of a temporary file renamed into place."""
    previous = os.umask(umask)
    try:
        storage.write_text(str(tmp_path / "history.json"), "{}")
        with open(tmp_path / "plain.json", "w") as stream:
            stream.write("{}")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE(os.stat(tmp_path / "history.json").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.json").st_mode) == 0o666 & ~umask


def test_staging_folders_of_processes_that_died_are_removed_not_those_of_live_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill -9 during a stitched prediction leaves its half-written scene in TMPDIR (up to gigabytes): the next
    staging folder of the same kind removes it, never a folder of a process still running."""
    import subprocess
    import sys
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile caches the folder it found first
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"odeon-prediction-{int(dead.stdout)}-abc"
    (stale / "stitched.tif").parent.mkdir()
    (stale / "stitched.tif").write_bytes(b"half a scene")
    live = tmp_path / f"odeon-prediction-{os.getpid()}-def"
    live.mkdir()
    other = tmp_path / f"odeon-tensorboard-{int(dead.stdout)}-ghi"
    other.mkdir()
    made = storage.staging_folder("prediction")
    assert not stale.exists() and live.exists() and other.exists() and Path(made).parent == tmp_path
    assert Path(made).name.startswith(f"odeon-prediction-{os.getpid()}-")
