"""Counting the transient storage failures that were retried, across DataLoader workers, so that a run can
say at the end how many it survived (a run that survives hundreds is a storage problem in the making).

Each retry is counted where the library that retries says so exactly:
- botocore (boto3, s3fs through aiobotocore, MLflow's S3 artifacts): a ``request-created`` event handler,
  added to botocore's built-in handlers so that every session gets it, counts each request whose
  retry context says it is attempt 2 or more;
- s3fs's own retry loop (errors botocore does not retry) and GDAL (rasters read through ``/vsis3/``,
  retried by GDAL itself, at open and inside reads) only announce their retries in their logs: those
  announcements are counted, and hidden unless the user would have seen them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
from typing import Any

from odeon_job.redaction import shorten

log = logging.getLogger("odeon")

#: Shared with forked DataLoader workers, whose reads retry too.
_RETRIES = multiprocessing.get_context("fork").Value("i", 0)
#: (logger, what its retry messages contain): s3fs's retry loop announces at DEBUG; GDAL (through rasterio)
#: warns.
#: GDAL announces a retried request as "... Retrying again in 0.5 secs", or, for the byte ranges of a read
#: fetched together, "Request for 1-2 failed with response_code=503" (then retries them).
_GDAL_RETRY = re.compile(r"Retrying again|failed with response_code=(429|5\d\d)")
_RETRY_ANNOUNCERS = (
    ("s3fs", re.compile("Retryable error")),
    # rasterio logs GDAL's warnings under one logger outside reads and under another during them (the stack of
    # errors it keeps while a read runs): the windows of a scene kept open are retried inside reads.
    ("rasterio._env", _GDAL_RETRY),
    ("rasterio._err", _GDAL_RETRY),
)
_DEBUG_ANNOUNCERS = {"s3fs"}
_warned_pid = 0


def _count(what: str) -> None:
    global _warned_pid
    with _RETRIES.get_lock():
        _RETRIES.value += 1
    if _warned_pid != os.getpid():  # one line per process; the total comes at the end
        _warned_pid = os.getpid()
        log.warning("storage: transient failure, retrying with backoff (%s)", shorten(what, 200))


def _count_botocore_retry(request: Any, operation_name: str = "", **kwargs: Any) -> None:
    """botocore's ``request-created`` event: the request of every attempt, the retry context telling which."""
    attempt = (getattr(request, "context", None) or {}).get("retries", {}).get("attempt", 1)
    if attempt > 1:
        _count(f"S3 {operation_name}, attempt {attempt}")


class _RetryAnnouncement(logging.Filter):
    """Counts the retries a library announces; lets through only what the user would have seen."""

    def __init__(self, marker: re.Pattern[str], passes_level: int) -> None:
        super().__init__()
        self.marker, self.passes_level = marker, passes_level

    def filter(self, record: logging.LogRecord) -> bool:
        if self.marker.search(record.getMessage()):
            _count(record.getMessage())
            return False
        return record.levelno >= self.passes_level


def count_retries() -> None:
    """Install the counters (idempotent); botocore sessions created afterwards count their retries."""
    from botocore.handlers import BUILTIN_HANDLERS

    handler = ("request-created.s3", _count_botocore_retry)
    if handler not in BUILTIN_HANDLERS:
        BUILTIN_HANDLERS.append(handler)
    for name, marker in _RETRY_ANNOUNCERS:
        logger = logging.getLogger(name)
        if any(isinstance(f, _RetryAnnouncement) for f in logger.filters):
            continue
        debug_only = name in _DEBUG_ANNOUNCERS
        logger.addFilter(_RetryAnnouncement(marker, logging.INFO if debug_only else logging.NOTSET))
        if debug_only and logger.getEffectiveLevel() > logging.DEBUG:
            logger.setLevel(logging.DEBUG)  # to see the announcements; the filter drops the rest of DEBUG


def transient_retries() -> int:
    """How many transient failures this process and its DataLoader workers retried so far."""
    return int(_RETRIES.value)
