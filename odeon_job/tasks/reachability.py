"""``odeon validate --services``: can this pod reach what the training will write to?

The Helm chart's test hook runs it inside the cluster, with the training's Secret and settings: the
output folder must take a write (the probe object is removed at once) and the MLflow server, when the
configuration names one, must answer with the credentials given.
"""

from __future__ import annotations

import os
import uuid

from odeon_job import storage
from odeon_job.config import JobConfig
from odeon_job.errors import OdeonError
from odeon_job.outputs.tracking import failure_reason, given_tracking_uri

PROBE_PREFIX = ".odeon-probe-"


def check_output_folder(config: JobConfig) -> str | None:
    """A problem with writing to ``output_setup.output_folder``, or None."""
    probe = storage.join(config.output_setup.output_folder, PROBE_PREFIX + uuid.uuid4().hex[:12])
    try:
        storage.write_bytes(probe, b"odeon validate --services\n")
        storage.remove(probe)
    except OdeonError as error:
        return f"output_setup.output_folder: {error}"
    return None


def mlflow_server(config: JobConfig) -> str | None:
    """The MLflow server the run would log to, or None (MLflow off, or a store in the output folder)."""
    out = config.output_setup
    uri = given_tracking_uri(config)
    return uri if out.use_mlflow and uri and not uri.startswith(("sqlite:", "file:")) else None


def check_mlflow(config: JobConfig) -> str | None:
    """A problem with reaching the MLflow server (one quick try, no retries), or None."""
    uri = mlflow_server(config)
    if uri is None:
        return None
    from mlflow import MlflowClient

    saved = {name: os.environ.get(name) for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="15")
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # MlflowException and requests' errors alike
        return f"output_setup.mlflow_tracking_uri: MLflow at {uri} does not answer: {failure_reason(error)}"
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return None


def check_services(config: JobConfig) -> list[str]:
    return [problem for problem in (check_output_folder(config), check_mlflow(config)) if problem]
