"""The one way URLs are shown: without the ``user:password@`` they may carry.

A URL with credentials (``mlflow_tracking_uri: http://user:pass@host``, ``-c https://user:pass@...``, a CSV
row) is kept as given in memory only; whatever is printed, logged, saved or sent (console lines, error
messages, config.json, checkpoints, MLflow parameters and artifacts) goes through :func:`redact`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

#: ``scheme://userinfo@``: the user (and password) part of any URL inside a text.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#@\s\"']+)@")
MASK = "***"


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***`` (the rest of each URL kept)."""
    if "@" not in text:
        return text
    return _USERINFO.sub(lambda match: f"{match['scheme']}{MASK}@", text)


def redact_values(data: Any) -> Any:
    """A JSON-like value (a configuration) with every string redacted."""
    if isinstance(data, dict):
        return {key: redact_values(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_values(value) for value in data]
    return redact(data) if isinstance(data, str) else data


class RedactingFilter(logging.Filter):
    """Redacts a log record's message (with its arguments) before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_log_handlers() -> None:
    """Put :class:`RedactingFilter` on every handler of every logger configured so far (ours, Lightning's,
    MLflow's): third-party lines that repeat a URL ("View run at ...") are redacted too. Called again after
    a library that installs handlers is imported."""
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
