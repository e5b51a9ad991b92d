"""What an MLflow run of the job is made of, before any MLflow call: where the store is, the run's
parameters, tags and metric names.

The store: ``output_setup.mlflow_tracking_uri``, else ``MLFLOW_TRACKING_URI``, else a local SQLite
store. For a local ``output_folder`` that store is ``output_folder/mlflow.db`` (artifacts in
``output_folder/mlartifacts``), shared by every run written there. For a remote ``output_folder`` a local
file would vanish with the pod: each run then has its own store, kept in a staging folder while the
job runs and uploaded to ``run_folder/mlflow.db`` after every validation, its artifacts written
straight to ``run_folder/mlflow-artifacts``.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from odeon_job import storage
from odeon_job.config import JobConfig
from odeon_job.outputs.run_folder import STORE_FILE, RunFolder
from odeon_job.process.launch import JOB_NAME_VARIABLE
from odeon_job.redaction import redact, shorten

#: The SQLite store shared by the runs of a local output folder.
#: MLflow accepts metric and parameter names matching ``^[/\w.\- ]*$``.
_NOT_ALLOWED = re.compile(r"[^/\w.\- ]")
#: MLflow's limit on a parameter value's length.
PARAM_VALUE_LIMIT = 6000


@dataclass(frozen=True)
class Store:
    """Where a run is recorded."""

    tracking_uri: str
    #: Artifact location for an experiment this job creates (None: the server decides).
    artifact_location: str | None = None
    #: For a per-run store: the local SQLite file, and the URL it is uploaded to.
    local_file: str | None = None
    upload_url: str | None = None


def given_tracking_uri(config: JobConfig, environ: Mapping[str, str] = os.environ) -> str | None:
    """The tracking URI the user gave (``output_setup.mlflow_tracking_uri``, else ``$MLFLOW_TRACKING_URI``); None
    when the job keeps its own store (in the output folder, or beside the run on object storage)."""
    return config.output_setup.mlflow_tracking_uri or environ.get("MLFLOW_TRACKING_URI") or None


def store_for(config: JobConfig, run_folder: RunFolder, environ: Mapping[str, str] = os.environ) -> Store:
    out = config.output_setup
    uri = given_tracking_uri(config, environ)
    if uri:
        return Store(uri)
    if storage.is_local(out.output_folder):
        folder = os.path.abspath(storage.resolve(out.output_folder, ""))
        os.makedirs(folder, exist_ok=True)
        return Store(
            f"sqlite:///{os.path.join(folder, STORE_FILE)}", artifact_location=os.path.join(folder, "mlartifacts")
        )
    local = os.path.join(storage.staging_folder("mlflow"), STORE_FILE)
    upload = run_folder.mlflow_store
    if storage.exists(upload):  # a resumed run continues in its own store
        storage.get_file(upload, local)
    return Store(
        f"sqlite:///{local}", artifact_location=run_folder.mlflow_artifacts, local_file=local, upload_url=upload
    )


def metric_name(name: str) -> str:
    """``name`` with every character MLflow refuses replaced by ``_`` (``bâtiment/IoU`` stays, ``a:b`` →
    ``a_b``), the same way every time."""
    return _NOT_ALLOWED.sub("_", name)


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """The resolved configuration as MLflow parameters: ``section.key`` → value as text (JSON for lists),
    URLs without credentials, long values cut to MLflow's limit; keys left unset (null) are not parameters."""
    if data is None:
        return {}
    if isinstance(data, dict):
        params: dict[str, str] = {}
        for key, value in data.items():
            params.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return params
    text = data if isinstance(data, str) else json.dumps(data)
    text = redact(text) if isinstance(data, str) else text
    if len(text) > PARAM_VALUE_LIMIT:
        text = text[: PARAM_VALUE_LIMIT - 3] + "..."
    return {metric_name(prefix): text}


def run_name(config: JobConfig) -> str:
    """The MLflow run's name: ``mlflow_run_name``, else the run folder's ``name_exp_log/version_name`` (both
    resolved by then), so the store and the output folder name a run alike."""
    out = config.output_setup
    return out.mlflow_run_name or f"{out.name_exp_log}/{out.version_name}"


@dataclass(frozen=True)
class CsvInput:
    """A CSV the training read, as an MLflow dataset input: its splits, where it is, a digest of its bytes and its
    rows."""

    splits: tuple[str, ...]
    url: str
    digest: str
    rows: int

    @property
    def name(self) -> str:
        return f"{'+'.join(self.splits)}: {storage.basename(self.url)}"


def csv_inputs(config: JobConfig) -> list[CsvInput]:
    """The configuration's CSVs (the train CSV also names the validation split it holds out, when there is no
    ``val_file``), each read once for its digest and rows."""
    import hashlib

    from odeon_job.data.samples import read_samples

    source = config.data_source
    files = {"train": source.train_file, "val": source.val_file, "test": source.test_file}
    by_url: dict[str, list[str]] = {}
    for split, url in files.items():
        held_out = url is None and split == "val"  # (percentage_val of the train CSV)
        if url or held_out:
            by_url.setdefault(url or source.train_file, []).append(split)
    inputs = []
    for url, splits in by_url.items():
        digest = hashlib.sha256(storage.read_bytes(url)).hexdigest()[:16]
        inputs.append(CsvInput(tuple(splits), redact(url), digest, len(read_samples(url))))
    return inputs


#: Tag → the environment variables that give it (the first one set wins).
_TAG_SOURCES: dict[str, tuple[str, ...]] = {
    "mlflow.source.git.commit": ("CI_COMMIT_SHA", "GIT_COMMIT", "ODEON_GIT_COMMIT"),
    "git.branch": ("CI_COMMIT_REF_NAME", "GIT_BRANCH"),
    "ci.pipeline_id": ("CI_PIPELINE_ID",),
    "ci.pipeline_url": ("CI_PIPELINE_URL",),
    "ci.job_id": ("CI_JOB_ID",),
    "ci.project": ("CI_PROJECT_PATH",),
    "image.tag": ("IMAGE_TAG", "ODEON_IMAGE_TAG"),
    "k8s.job": (JOB_NAME_VARIABLE, "PYTORCHJOB_NAME"),
    "k8s.namespace": ("POD_NAMESPACE", "ODEON_NAMESPACE"),
}


def environment_tags(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Tags that tie the run to the code, image, CI pipeline and Kubernetes objects that made it."""
    tags = {
        tag: next(environ[name] for name in names if environ.get(name))
        for tag, names in _TAG_SOURCES.items()
        if any(environ.get(name) for name in names)
    }
    host = environ.get("HOSTNAME") or socket.gethostname()
    tags["k8s.pod" if environ.get("KUBERNETES_SERVICE_HOST") else "host"] = host
    return tags


def failure_reason(error: BaseException) -> str:
    """The cause of a failed MLflow call in a few words (MLflow wraps urllib3's long messages)."""
    text = str(error).strip()
    for marker, reason in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host"),
        ("Temporary failure in name resolution", "unknown host"),
    ):
        if marker in text:
            return reason
    return shorten(text.splitlines()[0], 300) if text else type(error).__name__
