"""The one way URLs are shown: without the ``user:password@`` or the query string they may carry.

A URL with credentials (``mlflow_tracking_uri: http://user:pass@host``, ``-c https://user:pass@...``, a CSV
row, a presigned ``https://...?X-Amz-Signature=...``) is kept as given in memory only; whatever is printed,
logged, saved or sent (console lines, error messages, config.json, checkpoints, MLflow parameters and
artifacts) goes through :func:`redact`, and a long text is cut only after it (:func:`shorten`): a cut in the
middle of a URL would leave a password's first characters without the ``@`` that marks them.
"""

from __future__ import annotations

import logging
import re
from typing import Any

#: Any URL inside a text: a scheme, then everything up to a space or a quote.
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]*")
#: A URL's ``userinfo@`` (up to its last ``@`` before the path: a password may hold an ``@``).
_USERINFO = re.compile(r"^(?P<scheme>[^:]+://)[^/?#]*@")
MASK = "***"


def _redact_url(url: str) -> str:
    url = _USERINFO.sub(lambda match: f"{match['scheme']}{MASK}@", url)
    query = url.find("?")
    return url if query == -1 or query == len(url) - 1 else url[: query + 1] + MASK


def redact(text: str) -> str:
    """``text`` with the credentials (``userinfo@``) and query string (a presigned URL's signature is its
    credential) of every URL in it replaced by ``***``, the rest of each URL kept."""
    if "://" not in text:
        return text
    return _URL.sub(lambda match: _redact_url(match.group(0)), text)


def shorten(text: str, limit: int) -> str:
    """``text`` redacted, then cut to about ``limit`` characters with its full length said."""
    text = redact(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


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
    loggers = [
        logging.getLogger(),
        *(logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)),
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
