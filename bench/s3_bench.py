"""For the benchmarks: moto's S3 server in a process of its own on 127.0.0.1, with a dataset uploaded to it.

A process of its own: in a thread of the benchmark's process, moto would share the GIL with the reads
being measured.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

BUCKET = "bench"


@contextlib.contextmanager
def moto_with(folder: str, prefix: str = "data") -> Iterator[str]:
    """Start moto, point this process's AWS variables at it, upload ``folder`` under ``s3://bench/<prefix>/``;
    yields that URL prefix."""
    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint
        )
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        upload_folder(client, folder, prefix)
        yield f"s3://{BUCKET}/{prefix}"
    finally:
        server.terminate()
        server.wait()


def upload_folder(client: Any, folder: str, prefix: str) -> None:
    """Every file under ``folder`` to ``s3://bench/<prefix>/``, at its relative path."""
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            client.upload_file(path, BUCKET, f"{prefix}/{os.path.relpath(path, folder)}")


def on_s3(source: Any, url_prefix: str) -> Any:
    """A ``DataSource`` whose CSVs are the same files under ``url_prefix`` (their rows are relative)."""
    return source.model_copy(
        update={
            key: f"{url_prefix}/{os.path.basename(getattr(source, key))}"
            for key in ("train_file", "val_file", "test_file")
            if getattr(source, key)
        }
    )
