"""A URL is shown only redacted: its userinfo and its query string (a presigned URL's signature) never reach a line,
a file name or a saved file, and a long text is cut only after redaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from odeon_job import cli
from odeon_job.callbacks.predictions import prediction_names
from odeon_job.redaction import redact, shorten

from conftest import make_config

SECRET = "S3cr3tS1gn4tur3"


@pytest.mark.parametrize(("text", "shown"), [
    (f"https://bucket.example/a/scene.tif?X-Amz-Signature={SECRET}&X-Amz-Date=1",
     "https://bucket.example/a/scene.tif?***"),
    (f"row 3: cannot read https://user:p@ss{SECRET}@host/x.tif: not found",
     "row 3: cannot read https://***@host/x.tif: not found"),
    (f"'s3://bucket/k.tif?token={SECRET}'", "'s3://bucket/k.tif?***'"),
    ("s3://bucket/key.tif and /local/a?b.tif", "s3://bucket/key.tif and /local/a?b.tif"),
])
def test_redact_masks_userinfo_and_query_strings(text: str, shown: str) -> None:
    assert redact(text) == shown and SECRET not in redact(text)


def test_a_long_line_is_redacted_before_it_is_cut() -> None:
    url = f"https://user:{SECRET * 20}@host/scene.tif"
    assert SECRET[:5] not in shorten(f"row 1: {url}", 40)
    assert shorten("x" * 50, 10) == "x" * 10 + "... (50 characters)"


def test_a_malformed_csv_row_never_shows_a_prefix_of_its_password(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
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
    assert prediction_names([f"https://host/a/scene.tif?X-Amz-Signature={SECRET}", "s3://b/c/other.tif#x",
                             "/local/third.tif"]) == ["scene.tif", "other.tif", "third.tif"]
