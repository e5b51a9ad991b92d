"""The Helm chart, rendered by a real helm binary: lint, the PyTorchJob CRD's own schema (unknown
fields rejected, as kubectl does), the restricted Pod Security Standard, values.schema.json, and the
configuration and arguments the pods are given."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from odeon_job.commands.cli import build_parser
from odeon_job.config import apply_overrides, parse_config

from pod_security import restricted_violations

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "odeon-train"
MULTINODE_GPU = ROOT / "helm" / "examples" / "multinode-gpu.yaml"
CRD = ROOT / "tests" / "k8s-schemas" / "kubeflow.org_pytorchjobs.yaml"  # the operator's v1.9.4 CRD


@functools.cache
def helm_binary() -> str:
    found = shutil.which("helm", path=f"{ROOT / '.tools'}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("no helm binary: `make tools` downloads it to .tools/")
        pytest.skip("no helm binary (make tools)")
    return found


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)


def render(*args: str, release: str = "train-1") -> list[dict[str, Any]]:
    result = helm("template", release, str(CHART), "--namespace", "ml", *args)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def _closed(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever an object declares its properties."""
    if isinstance(schema, dict):
        schema = {key: _closed(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


@functools.cache
def pytorchjob_validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft7Validator(_closed(version["schema"]["openAPIV3Schema"]))


def pytorchjob(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (job,) = [d for d in documents if d["kind"] == "PyTorchJob"]
    return job


def pod_specs(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The PyTorchJob's pod specs (Master first), then the other pods'."""
    specs = [replica["template"]["spec"] for replica in pytorchjob(documents)["spec"]["pytorchReplicaSpecs"].values()]
    return specs + [d["spec"] for d in documents if d["kind"] == "Pod"]


RENDERINGS = {
    "defaults": [],
    "multinode-gpu": ["-f", str(MULTINODE_GPU)],
    "direct-launcher": ["--set", "launcher=direct", "--set", "workers=1", "--set", "cpuProcessesPerPod=2"],
}


def test_helm_lint_passes() -> None:
    for name, args in RENDERINGS.items():
        result = helm("lint", "--strict", str(CHART), *args)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_every_rendered_pytorchjob_fits_the_crd(name: str) -> None:
    job = pytorchjob(render(*RENDERINGS[name]))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in pytorchjob_validator().iter_errors(job)]
    assert errors == []
    assert job["apiVersion"] == "kubeflow.org/v1"
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        (container,) = replica["template"]["spec"]["containers"]
        assert container["name"] == "pytorch"  # the operator injects its variables into this container only
        assert {"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"} in container["ports"]
        assert replica["restartPolicy"] == "OnFailure"


def test_the_crd_check_catches_a_misspelt_field() -> None:
    job = pytorchjob(render())
    job["spec"]["runPolicy"]["backofLimit"] = 3
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    messages = [error.message for error in pytorchjob_validator().iter_errors(job)]
    assert any("'backofLimit' was unexpected" in m for m in messages)
    assert any("'volumeMount' was unexpected" in m for m in messages)


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_every_pod_is_restricted(name: str) -> None:
    specs = pod_specs(render(*RENDERINGS[name]))
    assert len(specs) >= 2  # the job's pods and the test hook's
    for spec in specs:
        assert restricted_violations(spec) == []
        (container,) = spec["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert any(mount["mountPath"] == "/tmp" for mount in container["volumeMounts"])  # the one writable place


def test_the_restricted_check_catches_what_it_should() -> None:
    spec = pod_specs(render())[0]
    spec["hostNetwork"] = True
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    context = spec["containers"][0]["securityContext"]
    context.update(allowPrivilegeEscalation=True, capabilities={"add": ["SYS_ADMIN"]})
    del context["seccompProfile"], spec["securityContext"]["seccompProfile"]
    problems = restricted_violations(spec)
    for expected in ("hostNetwork", "hostPath", "allowPrivilegeEscalation", "drop ALL", "SYS_ADMIN", "seccompProfile"):
        assert any(expected in problem for problem in problems), expected


def test_multinode_gpu_shape() -> None:
    job = pytorchjob(render(*RENDERINGS["multinode-gpu"]))
    spec = job["spec"]
    assert spec["nprocPerNode"] == "8" and spec["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    assert spec["runPolicy"] == {
        "backoffLimit": 5,
        "cleanPodPolicy": "Running",
        "activeDeadlineSeconds": 172800,
        "ttlSecondsAfterFinished": 604800,
    }
    pod = spec["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert container["command"][:3] == ["tini", "--", "torchrun"]
    assert container["envFrom"] == [{"secretRef": {"name": "odeon-credentials"}}]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ODEON_CONFIG"] == "s3://landcover/configs/unet-512.json"
    assert env["AWS_ENDPOINT_URL_S3"] == "https://minio.example.com"
    assert env["MLFLOW_TRACKING_URI"] == "https://mlflow.example.com"
    assert not any("KEY" in name or "PASSWORD" in name or "TOKEN" in name for name in env)  # Secret only
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
    assert pod["priorityClassName"] == "training" and pod["terminationGracePeriodSeconds"] == 30
    assert not any(d["kind"] == "ConfigMap" for d in render(*RENDERINGS["multinode-gpu"]))  # configUrl instead


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_the_pods_arguments_make_a_valid_configuration(name: str, tmp_path: Path) -> None:
    """The ConfigMap's JSON with the container's --set arguments, read as `odeon train` reads them."""
    documents = render(*RENDERINGS[name])
    container = pod_specs(documents)[0]["containers"][0]
    args = build_parser().parse_args(container["args"])
    config_maps = [d for d in documents if d["kind"] == "ConfigMap"]
    base = (
        json.loads(config_maps[0]["data"]["config.json"])
        if config_maps
        else yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    )
    config = parse_config(json.dumps(apply_overrides(base, args.overrides)), "rendered")
    processes = {"defaults": 1, "multinode-gpu": 8, "direct-launcher": 2}[name]
    nodes = {"defaults": 1, "multinode-gpu": 4, "direct-launcher": 2}[name]
    device = config.device_setup
    assert device.num_nodes == nodes
    assert (device.device if device.accelerator == "gpu" else device.num_processes) == processes
    assert (device.strategy == "ddp") == (nodes * processes > 1)
    assert config.train_setup.continue_training == "auto"
    assert device.stop_grace_period < pod_specs(documents)[0]["terminationGracePeriodSeconds"]
    (hook,) = [d for d in documents if d["kind"] == "Pod"]
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    check = build_parser().parse_args(hook["spec"]["containers"][0]["args"])
    assert (check.command, check.rows, check.services) == ("validate", 2, True)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"workers": -1}, "/workers"),
        ({"launcher": "mpirun"}, "/launcher"),
        ({"gpusPerPod": "two"}, "/gpusPerPod"),
        ({"workres": 2}, "workres"),
        ({"configUrl": "ftp://x/config.json"}, "/configUrl"),
        ({"config": {"train_setup": {}, "trainsetup": {}}}, "trainsetup"),
        ({"shmSize": "lots"}, "/shmSize"),
        ({"credentialsSecret": "Not A Name"}, "/credentialsSecret"),
        # The chart never holds credentials: literal values of secret-looking variables, user:password@ URLs.
        ({"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]}, "use valueFrom.secretKeyRef"),
        ({"env": [{"name": "MLFLOW_TRACKING_PASSWORD", "value": "x"}]}, "use valueFrom.secretKeyRef"),
        ({"env": [{"name": "HF_TOKEN", "value": "x"}]}, "use valueFrom.secretKeyRef"),
        ({"env": [{"name": "api_key", "value": "x"}]}, "use valueFrom.secretKeyRef"),
        ({"mlflow": {"trackingUri": "https://me:pw@mlflow.example"}}, "no user:password@ in the URL"),
        ({"configUrl": "https://me:pw@configs.example/c.json"}, "no user:password@ in the URL"),
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any], message: str, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(values))
    result = helm("template", "train-1", str(CHART), "-f", str(tmp_path / "bad.yaml"))
    assert result.returncode != 0
    assert message in result.stderr


def test_secrets_by_reference_and_key_ids_by_value_are_accepted(tmp_path: Path) -> None:
    values = {
        "env": [
            {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret"}}},
            {"name": "AWS_ACCESS_KEY_ID", "value": "AKIAEXAMPLE"},
            {"name": "LOG_LEVEL", "value": "debug"},
        ],
        "mlflow": {"trackingUri": "https://mlflow.example"},
    }
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(values))
    result = helm("template", "train-1", str(CHART), "-f", str(tmp_path / "good.yaml"))
    assert result.returncode == 0, result.stderr


def test_a_job_without_configuration_is_refused() -> None:
    result = helm("template", "train-1", str(CHART), "--set", "config=null")
    assert result.returncode != 0 and "set config" in result.stderr


# --- k8s/: the plain manifests, for clusters without Helm ---------------------------------------------


@functools.cache
def kustomized() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl", path=f"{ROOT / '.tools'}{os.pathsep}{os.environ.get('PATH', '')}")
    if kubectl is None:
        pytest.fail("no kubectl binary: `make tools` downloads it to .tools/")
    result = subprocess.run([kubectl, "kustomize", str(ROOT / "k8s")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def test_plain_manifests_fit_the_crd_and_are_restricted() -> None:
    documents = kustomized()
    assert sorted(d["kind"] for d in documents) == ["ConfigMap", "PyTorchJob"]  # the Secret is the user's
    job = pytorchjob(documents)
    assert list(pytorchjob_validator().iter_errors(job)) == []
    for spec in pod_specs(documents):
        assert restricted_violations(spec) == []


def test_plain_manifests_follow_the_chart() -> None:
    """Generated once from the chart: the same command, arguments, security and volumes (drift fails here)."""
    ours = pytorchjob(kustomized())["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    chart = pod_specs(render("--set", "credentialsSecret=odeon-credentials", release="odeon-train"))[0]
    for key in ("securityContext", "volumes", "terminationGracePeriodSeconds"):
        assert ours[key] == chart[key], key
    for key in ("command", "args", "ports", "securityContext", "volumeMounts", "envFrom"):
        assert ours["containers"][0][key] == chart["containers"][0][key], key
    config_map = next(d for d in kustomized() if d["kind"] == "ConfigMap")
    args = build_parser().parse_args(ours["containers"][0]["args"])
    config = parse_config(
        json.dumps(apply_overrides(json.loads(config_map["data"]["config.json"]), args.overrides)), "k8s/configmap.yaml"
    )
    assert config.train_setup.continue_training == "auto"
    secret = yaml.safe_load((ROOT / "k8s" / "secret.example.yaml").read_text())
    assert ours["containers"][0]["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]


def test_the_retrain_job_s_helm_command_renders_a_valid_pytorchjob(tmp_path: Path) -> None:
    """The pipeline's own `helm upgrade --install` line (.gitlab-ci.yml, retrain:submit), its variables set as a
    trigger would, run as `helm template`: what a retraining submits fits the CRD and runs our image."""
    import shlex

    pipeline = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
    command = next(line for line in pipeline["retrain:submit"]["script"] if line.startswith("helm upgrade"))
    values = tmp_path / "train-values.yaml"
    values.write_text("gpusPerPod: 1\n")
    variables = {
        "CI_PIPELINE_ID": "4242",
        "TRAIN_NAMESPACE": "ml",
        "CI_REGISTRY_IMAGE": "registry.example/odeon",
        "CI_COMMIT_SHORT_SHA": "0123abcd",
        "TRAIN_CONFIG_URL": "s3://bucket/configs/unet.json",
        "TRAIN_VALUES": str(values),
    }
    script = (
        "set -eu\n"
        + "".join(f"{name}={shlex.quote(value)}\n" for name, value in variables.items())
        + "helm() { shift 2; printf '%s\\n' \"$@\"; }\n"
        + command
    )  # the arguments after `upgrade --install`
    arguments = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    release, chart, *options = arguments
    assert (release, chart) == ("odeon-4242", "helm/odeon-train")
    options = [option for option in options if option != "--create-namespace"]  # not a `helm template` flag
    result = helm("template", release, str(ROOT / chart), *options)
    assert result.returncode == 0, result.stderr
    job = pytorchjob([d for d in yaml.safe_load_all(result.stdout) if d])
    pytorchjob_validator().validate(job)
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/odeon:0123abcd"
    assert "s3://bucket/configs/unet.json" in json.dumps(job)


PREDICT = ["--set", "command=predict", "--set", "workers=1", "--set", "cpuProcessesPerPod=2"]


def _predict_config(documents: list[dict[str, Any]], container: dict[str, Any]) -> Any:
    """The predict configuration a pod reads: its ConfigMap's predict.json (mounted where -c says) with its --set."""
    from odeon_job.config import load_predict_config

    args = build_parser().parse_args(container["args"])
    assert args.command == "predict" and args.config == "/etc/odeon/predict.json"
    (config_map,) = [d for d in documents if d["kind"] == "ConfigMap"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["config"] == "/etc/odeon"
    data = json.loads(config_map["data"]["predict.json"])
    return load_predict_config(None, apply_overrides(data, args.overrides), ())


def test_the_chart_runs_predict_in_the_training_s_pytorchjob_shape() -> None:
    documents = render(*PREDICT)
    job = pytorchjob(documents)
    assert [e.message for e in pytorchjob_validator().iter_errors(job)] == []
    specs = pod_specs(documents)
    assert len(specs) == 2 and not [d for d in documents if d["kind"] == "Pod"]  # no training check hook
    for spec in specs:
        assert restricted_violations(spec) == []
        config = _predict_config(documents, spec["containers"][0])
        assert config.model == "models:/landcover@champion" and config.output_type == "class"
        device = config.device_setup
        assert (device.num_nodes, device.num_processes, device.strategy) == (2, 2, "ddp")


def test_the_chart_runs_predict_as_a_plain_job_of_one_pod() -> None:
    documents = render(*PREDICT, "--set", "predict.kind=job", "--set", "predict.config.output_type=float32")
    assert not [d for d in documents if d["kind"] == "PyTorchJob"]
    (job,) = [d for d in documents if d["kind"] == "Job"]
    assert job["apiVersion"] == "batch/v1" and job["spec"]["backoffLimit"] == 3
    crd = yaml.safe_load(CRD.read_text())
    replica = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    replica = replica["properties"]["spec"]["properties"]["pytorchReplicaSpecs"]["additionalProperties"]
    template_schema = jsonschema.Draft7Validator(_closed(replica["properties"]["template"]))
    assert [e.message for e in template_schema.iter_errors(job["spec"]["template"])] == []  # the pod's own schema
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "OnFailure" and restricted_violations(spec) == []
    config = _predict_config(documents, spec["containers"][0])
    assert config.output_type == "float32" and config.device_setup.num_nodes == 1  # one pod, whatever workers says
    assert config.device_setup.num_processes == 2 and config.device_setup.strategy == "ddp"
    assert helm("lint", "--strict", str(CHART), *PREDICT, "--set", "predict.kind=job").returncode == 0


# --- what a user reads: the chart's README, k8s/ rendered from the chart -----------------------------------

#: Values documented as one row (their inner keys are the user's: a configuration, resources, labels).
WHOLE_VALUES = {"config", "predict.config", "resources", "nodeSelector", "affinity", "podAnnotations", "podLabels"}


def _documented_values(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Each value's path → its default as the README's table shows it."""
    rows: dict[str, str] = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and path not in WHOLE_VALUES:
            rows.update(_documented_values(value, path))
        else:
            rows[path] = "see `values.yaml`" if isinstance(value, dict) and value else f"`{json.dumps(value)}`"
    return rows


def test_the_chart_readme_lists_every_value_with_its_default() -> None:
    readme = helm("show", "readme", str(CHART)).stdout  # what `helm show readme` prints
    table = {
        row.split("|")[1].strip().strip("`"): row.split("|")[2].strip()
        for row in readme.splitlines()
        if row.startswith("| `")
    }
    expected = _documented_values(yaml.safe_load((CHART / "values.yaml").read_text()))
    assert table == expected


def test_plain_manifests_are_the_chart_rendered_with_placeholders(tmp_path: Path) -> None:
    for folder in ("helm", "k8s", ".ci"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    subprocess.run(
        ["bash", str(tmp_path / ".ci" / "k8s-from-chart.sh")],
        env={**os.environ, "HELM": helm_binary()},
        check=True,
        timeout=120,
    )
    for name in ("configmap.yaml", "pytorchjob.yaml"):
        assert (tmp_path / "k8s" / name).read_text() == (ROOT / "k8s" / name).read_text(), f"make k8s: {name}"
    text = "".join(path.read_text() for path in (ROOT / "k8s").glob("*.yaml"))
    assert "example.com" not in text and "my-bucket" not in text
    assert "https://s3.REPLACE-ME.invalid" in text and "https://mlflow.REPLACE-ME.invalid" in text
