"""A URL is shown only redacted: its userinfo and its query string (a presigned URL's signature) never reach a line,
a file name or a saved file, and a long text is cut only after redaction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.config import Config as BotoConfig

from odeon_job.commands import cli
from odeon_job.outputs.run_folder import prediction_names
from odeon_job.redaction import redact, shorten

from conftest import Scenes, make_config
from s3_server import Bucket

SECRET = "S3cr3tS1gn4tur3"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            f"https://bucket.example/a/scene.tif?X-Amz-Signature={SECRET}&X-Amz-Date=1",
            "https://bucket.example/a/scene.tif?***",
        ),
        (
            f"row 3: cannot read https://user:p@ss{SECRET}@host/x.tif: not found",
            "row 3: cannot read https://***@host/x.tif: not found",
        ),
        (f"'s3://bucket/k.tif?token={SECRET}'", "'s3://bucket/k.tif?***'"),
        ("s3://bucket/key.tif and /local/a?b.tif", "s3://bucket/key.tif and /local/a?b.tif"),
    ],
)
def test_redact_masks_userinfo_and_query_strings(text: str, shown: str) -> None:
    assert redact(text) == shown and SECRET not in redact(text)


def test_a_long_line_is_redacted_before_it_is_cut() -> None:
    url = f"https://user:{SECRET * 20}@host/scene.tif"
    assert SECRET[:5] not in shorten(f"row 1: {url}", 40)
    assert shorten("x" * 50, 10) == "x" * 10 + "... (50 characters)"


def test_a_malformed_csv_row_never_shows_a_prefix_of_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The row is quoted in the error cut to 120 characters: cut first, the 'user:password' had no '@' left to be
    recognised by, and its first characters were printed."""
    csv = tmp_path / "t.csv"
    csv.write_text(f"https://user:{SECRET * 20}@host/scene.tif\n")
    (tmp_path / "c.json").write_text(json.dumps(make_config(str(csv), str(tmp_path / "out"))))
    assert cli.main(["validate", "-c", str(tmp_path / "c.json")]) == 2
    error = capsys.readouterr().err
    assert f"{csv} row 1: expected 'image,mask', got 1 field(s): 'https://***@host/scene.tif'" in error
    assert SECRET[:4] not in error and "user:" not in error


def test_prediction_names_come_from_the_path_alone() -> None:
    assert prediction_names(
        [f"https://host/a/scene.tif?X-Amz-Signature={SECRET}", "s3://b/c/other.tif#x", "/local/third.tif"]
    ) == ["scene.tif", "other.tif", "third.tif"]


@pytest.mark.slow
def test_a_presigned_scene_url_leaves_its_signature_in_no_line_and_no_file(
    make_scenes: Callable[..., Scenes], bucket: Bucket, tmp_path: Path
) -> None:
    """Scenes read at presigned HTTP URLs (?X-Amz-Credential=...&X-Amz-Signature=..., the signature being the
    credential): the training reads them, and no signature appears in any console line (-v included) or in any
    file of the run, whose predictions are named from the URL's path alone."""
    scenes = make_scenes(sizes=((256, 256), (256, 320)))
    bucket.upload_folder(scenes.folder, "signed")
    signer = boto3.client(
        "s3",
        endpoint_url=bucket.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=BotoConfig(signature_version="s3v4"),
    )
    signed = {
        key: signer.generate_presigned_url("get_object", Params={"Bucket": bucket.name, "Key": key})
        for key in (f"signed/{kind}/scene{i}.tif" for kind in ("img", "msk") for i in range(2))
    }
    signatures = [parse_qs(urlsplit(url).query)["X-Amz-Signature"][0] for url in signed.values()]
    csv = tmp_path / "signed.csv"
    csv.write_text(
        "".join(f"{signed[f'signed/img/scene{i}.tif']},{signed[f'signed/msk/scene{i}.tif']}\n" for i in range(2))
    )
    config = make_config(
        str(csv),
        str(tmp_path / "out"),
        data_source={"val_file": str(csv), "test_file": str(csv), "patch_size": 128, "class_labels": ["a", "b", "c"]},
        output_setup={"get_prediction": True},
    )
    (tmp_path / "c.json").write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "odeon_job", "train", "-c", str(tmp_path / "c.json"), "-v"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scene0.tif?***" in done.stderr  # the URLs are shown, redacted
    run = tmp_path / "out" / "exp" / "v"
    assert sorted(os.listdir(run / "predictions")) == ["scene0.tif", "scene1.tif"]
    for signature in signatures:
        assert signature not in done.stdout + done.stderr
        for path in run.rglob("*"):
            assert signature not in path.name
            if path.is_file():
                assert signature.encode() not in path.read_bytes(), path
    # odeon predict and odeon evaluate, at the same URLs: no signature in a line, a file, or a file's name
    images = tmp_path / "images.csv"
    images.write_text("".join(f"{signed[f'signed/img/scene{i}.tif']}\n" for i in range(2)))
    outputs = {"maps": tmp_path / "maps", "report": tmp_path / "report"}
    for command in (
        ["predict", "--model", str(run), "--images", str(images), "--output", str(outputs["maps"])],
        ["evaluate", "--model", str(run), "--data", str(csv), "--output", str(outputs["report"])],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "odeon_job", *command, "-v"], capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        for signature in signatures:
            assert signature not in done.stdout + done.stderr
    assert sorted(p.name for p in outputs["maps"].glob("*.tif")) == ["scene0.tif", "scene1.tif"]
    for folder in outputs.values():
        for path in folder.rglob("*"):
            for signature in signatures:
                assert signature not in path.name
                assert not path.is_file() or signature.encode() not in path.read_bytes(), path
