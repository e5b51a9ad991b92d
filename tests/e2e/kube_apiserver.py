"""A real Kubernetes API server (etcd + kube-apiserver) on 127.0.0.1, for the chart and `odeon job`.

No kubelet, scheduler or operator: objects are stored and validated by the server, nothing runs.
kube-apiserver is built by `.ci/build-kube-apiserver.sh` (make k8s-e2e); etcd is Debian's.
Authentication by a static token, authorization AlwaysAllow; the serving certificate is the one the
server makes for itself (the kubeconfig skips its verification).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import yaml

TOKEN = "odeon-e2e-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class KubeApiServer:
    def __init__(self, folder: Path, apiserver: str) -> None:
        self.folder = folder
        etcd_port, peer_port, self.port = free_port(), free_port(), free_port()
        (folder / "tokens.csv").write_text(f"{TOKEN},admin,admin,system:masters\n")
        subprocess.run(["openssl", "genrsa", "-out", str(folder / "sa.key"), "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", str(folder / "sa.key"), "-pubout", "-out", str(folder / "sa.pub")],
            check=True,
            capture_output=True,
        )
        self.etcd = subprocess.Popen(
            [
                "etcd",
                "--data-dir",
                str(folder / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(folder / "etcd.log", "w"),
        )  # noqa: SIM115
        self.apiserver = subprocess.Popen(
            [
                apiserver,
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={folder / 'certs'}",
                f"--token-auth-file={folder / 'tokens.csv'}",
                "--authorization-mode=AlwaysAllow",
                f"--service-account-key-file={folder / 'sa.pub'}",
                f"--service-account-signing-key-file={folder / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--disable-admission-plugins=ServiceAccount",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(folder / "apiserver.log", "w"),
        )  # noqa: SIM115
        self.kubeconfig = folder / "kubeconfig"
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "e2e",
                    "clusters": [
                        {
                            "name": "e2e",
                            "cluster": {"server": f"https://127.0.0.1:{self.port}", "insecure-skip-tls-verify": True},
                        }
                    ],
                    "users": [{"name": "admin", "user": {"token": TOKEN}}],
                    "contexts": [
                        {"name": "e2e", "context": {"cluster": "e2e", "user": "admin", "namespace": "default"}}
                    ],
                }
            )
        )
        self.env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        self._wait_ready()

    def _wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.apiserver.poll() is not None:
                raise RuntimeError("kube-apiserver exited:\n" + (self.folder / "apiserver.log").read_text()[-3000:])
            if self.kubectl("get", "--raw", "/readyz").returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError("kube-apiserver not ready:\n" + (self.folder / "apiserver.log").read_text()[-3000:])

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        binary = shutil.which("kubectl") or "kubectl"
        return subprocess.run([binary, *args], env=self.env, input=stdin, capture_output=True, text=True, timeout=60)

    def stop(self) -> None:
        for process in (self.apiserver, self.etcd):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
