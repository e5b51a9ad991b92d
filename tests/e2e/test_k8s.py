"""The chart and `odeon job` against a real API server (make k8s-e2e; building kube-apiserver takes
minutes, so this is outside the default run). The server stores and validates; nothing runs pods, so
the test itself moves a PyTorchJob's status as the training operator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_apiserver import KubeApiServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "odeon-train"
CRD = ROOT / "tests" / "k8s-schemas" / "kubeflow.org_pytorchjobs.yaml"  # the operator's v1.9.4 CRD
APISERVER = os.environ.get("KUBE_APISERVER", str(ROOT / ".tools" / "kube-apiserver"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiServer]:
    if not Path(APISERVER).exists():
        pytest.fail(f"no kube-apiserver at {APISERVER}: run make k8s-e2e (it builds one)")
    server = KubeApiServer(tmp_path_factory.mktemp("k8s"), APISERVER)
    try:
        created = server.kubectl("create", "--validate=false", "-f", str(CRD))
        assert created.returncode == 0, created.stderr
        deadline = time.monotonic() + 60
        while (listed := server.kubectl("get", "pytorchjobs", "-A")).returncode != 0:  # until the API serves it
            assert time.monotonic() < deadline, listed.stderr
            time.sleep(0.5)
        yield server
    finally:
        server.stop()


def helm(cluster: KubeApiServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["helm", *args], env=cluster.env, capture_output=True, text=True, timeout=120)


def get_job(cluster: KubeApiServer, name: str) -> dict:
    result = cluster.kubectl("get", "pytorchjob", name, "-n", "ml", "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def set_conditions(cluster: KubeApiServer, name: str, *conditions: tuple[str, str, str]) -> None:
    """Write ``status.conditions`` as the operator does: (type, status, message), the n-th condition
    having changed n seconds after 10:00."""
    at = [f"2026-11-24T10:00:0{n}Z" for n in range(len(conditions))]
    status = {
        "conditions": [
            {
                "type": kind,
                "status": state,
                "reason": f"PyTorchJob{kind}",
                "message": message,
                "lastUpdateTime": at[n],
                "lastTransitionTime": at[n],
            }
            for n, (kind, state, message) in enumerate(conditions)
        ],
        "replicaStatuses": {"Master": {"active": 1}},
    }
    result = cluster.kubectl(
        "patch",
        "pytorchjob",
        name,
        "-n",
        "ml",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    assert result.returncode == 0, result.stderr


def start_wait(cluster: KubeApiServer, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "odeon_job", "job", "wait", name, "-n", "ml", "--interval", "0.3", "--timeout", "60"],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_install_upgrade_uninstall(cluster: KubeApiServer) -> None:
    installed = helm(cluster, "install", "train-1", str(CHART), "-n", "ml", "--create-namespace")
    assert installed.returncode == 0, installed.stderr
    assert "odeon job wait train-1 -n ml" in installed.stdout  # NOTES.txt
    job = get_job(cluster, "train-1")
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    config_map = cluster.kubectl("get", "configmap", "train-1-config", "-n", "ml", "-o", "json")
    assert json.loads(json.loads(config_map.stdout)["data"]["config.json"])["train_setup"]["model_name"] == "unet"

    upgraded = helm(cluster, "upgrade", "train-1", str(CHART), "-n", "ml", "--set", "workers=2")
    assert upgraded.returncode == 0, upgraded.stderr
    assert get_job(cluster, "train-1")["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2

    uninstalled = helm(cluster, "uninstall", "train-1", "-n", "ml", "--wait")
    assert uninstalled.returncode == 0, uninstalled.stderr
    assert "NotFound" in cluster.kubectl("get", "pytorchjob", "train-1", "-n", "ml").stderr


def test_the_server_refuses_a_bad_values_file(cluster: KubeApiServer, tmp_path: Path) -> None:
    """values.schema.json cannot know every rule of the pod spec: a quantity the server refuses."""
    (tmp_path / "bad.yaml").write_text("resources:\n  limits:\n    memory: lots\n")
    refused = helm(
        cluster, "install", "train-bad", str(CHART), "-n", "ml", "--create-namespace", "-f", str(tmp_path / "bad.yaml")
    )
    assert refused.returncode != 0
    assert "memory" in refused.stderr and ("Invalid value" in refused.stderr or "must match" in refused.stderr)
    assert "NotFound" in cluster.kubectl("get", "pytorchjob", "train-bad", "-n", "ml").stderr
    helm(cluster, "uninstall", "train-bad", "-n", "ml")


def test_every_rendering_passes_server_side_dry_run(cluster: KubeApiServer) -> None:
    example = ROOT / "helm" / "examples" / "multinode-gpu.yaml"
    for args in ([], ["-f", str(example)], ["--set", "launcher=direct", "--set", "workers=1"]):
        rendered = helm(cluster, "template", "dry", str(CHART), "-n", "ml", *args)
        assert rendered.returncode == 0, rendered.stderr
        applied = cluster.kubectl("apply", "--dry-run=server", "-n", "ml", "-f", "-", stdin=rendered.stdout)
        assert applied.returncode == 0, f"{args}: {applied.stderr}"


def test_job_wait_follows_a_job_to_success(cluster: KubeApiServer) -> None:
    assert helm(cluster, "install", "train-ok", str(CHART), "-n", "ml", "--create-namespace").returncode == 0
    waiting = start_wait(cluster, "train-ok")
    time.sleep(1.5)
    set_conditions(cluster, "train-ok", ("Created", "True", "PyTorchJob train-ok is created."))
    time.sleep(1.5)
    set_conditions(
        cluster,
        "train-ok",
        ("Created", "True", "PyTorchJob train-ok is created."),
        ("Running", "True", "PyTorchJob train-ok is running."),
    )
    time.sleep(1.5)
    assert waiting.poll() is None  # still waiting while it runs
    set_conditions(
        cluster,
        "train-ok",
        ("Created", "True", "PyTorchJob train-ok is created."),
        ("Running", "False", "PyTorchJob train-ok is running."),
        ("Succeeded", "True", "PyTorchJob train-ok is successfully completed."),
    )
    _, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("pytorchjob ml/train-ok: ")]
    assert [line.split()[3] for line in lines if "pods:" not in line] == ["Created:", "Running:", "Succeeded:"], stderr
    status = subprocess.run(
        [sys.executable, "-m", "odeon_job", "job", "status", "train-ok", "-n", "ml"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and "Succeeded: PyTorchJobSucceeded" in status.stdout


def test_job_wait_reports_a_failure(cluster: KubeApiServer) -> None:
    assert helm(cluster, "install", "train-ko", str(CHART), "-n", "ml", "--create-namespace").returncode == 0
    waiting = start_wait(cluster, "train-ko")
    time.sleep(1.5)
    set_conditions(
        cluster,
        "train-ko",
        ("Created", "True", "created"),
        ("Running", "False", "running"),
        ("Failed", "True", "PyTorchJob train-ko is failed because 1 Master replica(s) failed."),
    )
    _, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 1
    assert stderr.splitlines()[-1] == (
        "odeon: pytorchjob ml/train-ko failed: PyTorchJob train-ko is failed because 1 Master replica(s) failed."
    )


def test_job_wait_names_a_missing_job(cluster: KubeApiServer) -> None:
    missing = start_wait(cluster, "no-such-job")
    _, stderr = missing.communicate(timeout=30)
    assert missing.returncode == 2 and "odeon: error: pytorchjob ml/no-such-job: not found" in stderr
