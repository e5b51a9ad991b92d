"""A real S3 endpoint on loopback for the tests: moto's server, and a proxy in front of it that counts
the bytes it serves and can answer ``503 SlowDown`` to the next requests (a throttling store)."""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import os
import threading
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3

_HOP_HEADERS = {"connection", "transfer-encoding", "content-length", "server", "date", "keep-alive"}
_bucket_numbers = itertools.count()


class MotoServer:
    """moto's S3 on 127.0.0.1 (a random port), in a thread of the test process."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.port = port

    def require_signed_requests(self, required: bool) -> None:
        """Make the server check credentials (unknown keys and anonymous requests get 403)."""
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=b"0" if required else b"inf",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request).read()

    def stop(self) -> None:
        self._server.stop()


class CountingProxy:
    """Forwards every request to ``upstream_port``; counts response bytes; can fail the next requests."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.bytes_served = 0
        self.requests: list[tuple[str, str, str | None]] = []
        #: (method, path, bytes of the response body) of every request answered by the upstream.
        self.responses: list[tuple[str, str, int]] = []
        self.failures_left = 0
        #: Fail every n-th request (0: never), and how many failures were injected in all.
        self.fail_period = 0
        self.failures_injected = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def fail_next(self, count: int) -> None:
        with self._lock:
            self.failures_left = count

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.requests.append((self.command, self.path, self.headers.get("Range")))
                    fail = proxy.failures_left > 0 or (
                        proxy.fail_period > 0 and len(proxy.requests) % proxy.fail_period == 0
                    )
                    proxy.failures_left -= int(proxy.failures_left > 0)
                    proxy.failures_injected += int(fail)
                if fail:
                    payload = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":  # a body after a HEAD's headers would be read as the next response
                        self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                upstream.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_HEADERS:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                    with proxy._lock:
                        proxy.bytes_served += len(data)
                        proxy.responses.append((self.command, self.path, len(data)))

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward

        return Handler

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Bucket:
    """A fresh bucket of the test endpoint, and helpers to fill and list it."""

    name: str
    endpoint: str
    client: object = field(repr=False)

    def url(self, key: str = "") -> str:
        return f"s3://{self.name}/{key}"

    def upload_folder(self, folder: Path, prefix: str) -> None:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.client.upload_file(str(path), self.name, f"{prefix}/{path.relative_to(folder).as_posix()}")

    def put(self, key: str, data: bytes | str) -> str:
        self.client.put_object(Bucket=self.name, Key=key, Body=data.encode() if isinstance(data, str) else data)
        return self.url(key)

    def put_json(self, key: str, data: object) -> str:
        return self.put(key, json.dumps(data))

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def download_folder(self, prefix: str, folder: Path) -> Path:
        for key in self.keys(prefix):
            target = folder / key[len(prefix) :].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.get(key))
        return folder


TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def new_bucket(endpoint: str) -> Bucket:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    name = f"odeon-test-{os.getpid()}-{next(_bucket_numbers)}"
    client.create_bucket(Bucket=name)
    return Bucket(name, endpoint, client)
