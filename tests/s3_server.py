"""A real S3 endpoint on loopback for the tests: moto's server, and a proxy in front of it that counts
the bytes it serves and can answer ``503 SlowDown`` to the next requests (a throttling store)."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3

_HOP_HEADERS = {"connection", "transfer-encoding", "content-length", "server", "date", "keep-alive"}
_bucket_numbers = itertools.count()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_it_answers(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 120  # a busy CI runner starts moto in seconds; a broken one never
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{what} did not answer at {url}")


class MotoServer:
    """moto's S3 on 127.0.0.1 (a free port), in a process of its own, as a real store is. In a thread of the test
    process it could hang a test: rasterio calls some GDAL functions holding the GIL, and one that waits for a
    read over HTTP waits for a server that needs that GIL (seen once in CI: validate's 8 threads, stuck)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from moto.server import main; main(sys.argv[1:])"]
            + ["-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # one access-log line per request otherwise
        )
        _wait_until_it_answers(f"{self.endpoint}/moto-api/data.json", self._process, "moto's S3 server")

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
        self._process.terminate()
        self._process.wait(30)


#: The proxy's own paths (never forwarded): its state as JSON, and what to change in it.
_CONTROL = "/__proxy__/"


class _ProxyState:
    """What the proxy process counts and injects (lives in that process)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.bytes_served = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self.responses: list[tuple[str, str, int]] = []
        self.failures_left = 0
        self.fail_period = 0
        self.failures_injected = 0
        self.lock = threading.Lock()

    def as_json(self) -> bytes:
        with self.lock:
            return json.dumps(
                {
                    "bytes_served": self.bytes_served,
                    "requests": self.requests,
                    "responses": self.responses,
                    "failures_left": self.failures_left,
                    "fail_period": self.fail_period,
                    "failures_injected": self.failures_injected,
                }
            ).encode()

    def change(self, changes: dict[str, int]) -> None:
        with self.lock:
            if changes.get("clear"):
                self.requests.clear()
                self.responses.clear()
            for key in ("failures_left", "fail_period"):
                if key in changes:
                    setattr(self, key, int(changes[key]))


def _proxy_handler(state: _ProxyState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def reply(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":  # a body after a HEAD's headers would be read as the next response
                self.wfile.write(payload)

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if self.path.startswith(_CONTROL):
                if body:
                    state.change(json.loads(body))
                self.reply(200, state.as_json())
                return
            with state.lock:
                state.requests.append((self.command, self.path, self.headers.get("Range")))
                fail = state.failures_left > 0 or (
                    state.fail_period > 0 and len(state.requests) % state.fail_period == 0
                )
                state.failures_left -= int(state.failures_left > 0)
                state.failures_injected += int(fail)
            if fail:
                self.reply(
                    503, b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                )
                return
            upstream = http.client.HTTPConnection("127.0.0.1", state.upstream_port, timeout=30)
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
                with state.lock:
                    state.bytes_served += len(data)
                    state.responses.append((self.command, self.path, len(data)))

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward

    return Handler


class CountingProxy:
    """Forwards every request to ``upstream_port``; counts response bytes; can fail the next requests (``503
    SlowDown``). It runs in a process of its own (see :class:`MotoServer`); this object reads and sets its state."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        port = _free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self._process = subprocess.Popen(
            [sys.executable, __file__, "proxy", str(port), str(upstream_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_until_it_answers(self.endpoint + _CONTROL, self._process, "the counting proxy")

    def _state(self, changes: dict[str, int] | None = None) -> dict:
        data = json.dumps(changes).encode() if changes else None
        request = urllib.request.Request(self.endpoint + _CONTROL, data=data, method="POST" if data else "GET")
        return json.loads(urllib.request.urlopen(request, timeout=30).read())

    @property
    def bytes_served(self) -> int:
        return int(self._state()["bytes_served"])

    @property
    def requests(self) -> list[tuple[str, str, str | None]]:
        """(method, path, Range header) of every request, in order."""
        return [tuple(request) for request in self._state()["requests"]]  # type: ignore[misc]

    @property
    def responses(self) -> list[tuple[str, str, int]]:
        """(method, path, bytes of the response body) of every request answered by the upstream."""
        return [tuple(response) for response in self._state()["responses"]]  # type: ignore[misc]

    @property
    def failures_left(self) -> int:
        return int(self._state()["failures_left"])

    @property
    def failures_injected(self) -> int:
        """How many failures were injected in all."""
        return int(self._state()["failures_injected"])

    @property
    def fail_period(self) -> int:
        """Fail every n-th request (0: never)."""
        return int(self._state()["fail_period"])

    @fail_period.setter
    def fail_period(self, period: int) -> None:
        self._state({"fail_period": period})

    def fail_next(self, count: int) -> None:
        self._state({"failures_left": count})

    def clear(self) -> None:
        """Forget the requests and responses seen so far."""
        self._state({"clear": 1})

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(30)


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


if __name__ == "__main__" and sys.argv[1:2] == ["proxy"]:  # CountingProxy's process: proxy PORT UPSTREAM_PORT
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), _proxy_handler(_ProxyState(int(sys.argv[3])))).serve_forever()
