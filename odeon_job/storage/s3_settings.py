"""Object-storage settings from the standard environment, for both readers of object storage.

Two clients talk to S3: fsspec/s3fs (CSVs, configs, checkpoints and every output) and GDAL
(rasters, streamed by byte range through ``/vsis3/``). They read different variables, so this module
derives each one's settings from the variables users already set for the AWS CLI:

- credentials are never touched: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``,
  a profile, or an IAM role (IRSA's ``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``, instance
  metadata) are found by both clients themselves;
- ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``) points both at an S3-compatible store (MinIO,
  Ceph, ...), with path-style addressing;
- ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``) names the region;
- transient failures (5xx, throttling, connection resets, timeouts) are retried with exponential
  backoff by both clients (each retry is counted: :mod:`odeon_job.storage.retries`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from odeon_job.storage.retries import count_retries

log = logging.getLogger("odeon")

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")
#: botocore's retries unless AWS_RETRY_MODE / AWS_MAX_ATTEMPTS say otherwise: "standard" retries
#: 5xx, throttling and connection errors with exponential backoff (up to 20 s between attempts).
S3_RETRY_MODE = "standard"
S3_MAX_ATTEMPTS = 8


def s3_endpoint(environ: Mapping[str, str] = os.environ) -> str | None:
    """The S3-compatible endpoint URL the environment names, if any."""
    return next((environ[name] for name in ENDPOINT_VARIABLES if environ.get(name)), None)


def s3_region(environ: Mapping[str, str] = os.environ) -> str | None:
    return next((environ[name] for name in REGION_VARIABLES if environ.get(name)), None)


def credentials_hint() -> str:
    """A note for an "access denied" on S3 when no credentials can be found (the request went unsigned)."""
    try:
        import botocore.session

        found = botocore.session.get_session().get_credentials() is not None
    except Exception:  # a broken profile or role: botocore's own error would be clearer than ours
        return ""
    return (
        ""
        if found
        else (
            "; no AWS credentials were found, so the request was anonymous: set AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, or give the pod an IAM role"
        )
    )


def fsspec_s3_options(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Keyword arguments for ``s3fs.S3FileSystem``: endpoint, region, path-style addressing, retries.

    botocore reads ``AWS_ENDPOINT_URL*`` itself but not ``AWS_REGION``; passing both explicitly
    also makes fsspec's instance cache tell apart two endpoints used in one process.
    """
    client: dict[str, Any] = {}
    config: dict[str, Any] = {}
    endpoint = s3_endpoint(environ)
    if endpoint:
        client["endpoint_url"] = endpoint
        config["s3"] = {"addressing_style": "path"}
    region = s3_region(environ)
    if region:
        client["region_name"] = region
    if not environ.get("AWS_RETRY_MODE") and not environ.get("AWS_MAX_ATTEMPTS"):
        config["retries"] = {"mode": S3_RETRY_MODE, "max_attempts": S3_MAX_ATTEMPTS}
    options: dict[str, Any] = {}
    if client:
        options["client_kwargs"] = client
    if config:
        options["config_kwargs"] = config
    return options


def configure_fsspec(environ: Mapping[str, str] = os.environ) -> None:
    """Make every ``s3://`` filesystem fsspec builds (ours and Lightning's) use :func:`fsspec_s3_options`."""
    import fsspec.config

    options = fsspec_s3_options(environ)
    for protocol in ("s3", "s3a"):
        if options:
            fsspec.config.conf[protocol] = options
        else:
            fsspec.config.conf.pop(protocol, None)

    count_retries()


def gdal_s3_options(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """GDAL's names for the endpoint settings (GDAL ignores ``AWS_ENDPOINT_URL``); a variable of
    GDAL's own name in the environment wins."""
    endpoint = s3_endpoint(environ)
    if not endpoint:
        return {}
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    derived = {
        "AWS_S3_ENDPOINT": parts.netloc + parts.path.rstrip("/"),
        "AWS_HTTPS": "NO" if parts.scheme == "http" else "YES",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }
    return {key: value for key, value in derived.items() if key not in environ}
