"""The project's user-error type: a mistake the user can fix, shown as one line, exit status 2.

Bugs stay ordinary exceptions (and tracebacks); only problems in the user's config, data,
credentials or network are raised as :class:`OdeonError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from odeon_job.redaction import shorten


class OdeonError(Exception):
    """A user's mistake: the message is one line naming the field, CSV row, file or URL."""


class ConfigError(OdeonError):
    """The configuration is invalid or asks for something this version cannot do."""


class DataError(OdeonError):
    """A CSV row or raster cannot be used as the configuration says."""


class StorageError(OdeonError):
    """A file or URL cannot be read or written."""


def one_line(error: BaseException) -> str:
    """The message to show a user for ``error``: one line per problem.

    A DataLoader worker re-raises its exception in the main process with the worker's whole
    traceback as the message; the user's message is then its last line, after the class name.
    """
    text = str(error).strip()
    if "Traceback (most recent call last)" not in text:
        return text
    last = text.splitlines()[-1]
    prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
    return last[len(prefix) :] if last.startswith(prefix) else last


def deepest_reason(error: BaseException) -> str:
    """What a library said went wrong: rasterio raises "Read failed. See previous exception for details." and
    chains GDAL's own messages as causes; the deepest of those says why (libtiff's "Incorrect count for
    "StripByteCounts"", "No space left on device")."""
    reasons = [str(error)]
    cause = error.__cause__
    while cause is not None and len(reasons) < 10:
        reasons.append(str(cause))
        cause = cause.__cause__
    useful = [reason for reason in reasons if reason and "See previous exception" not in reason]
    return useful[-1] if useful else reasons[0]


#: Characters of a user's value quoted in an error line (a 50 MB value must not become a 50 MB line).
QUOTE_LIMIT = 200


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)``, its URLs redacted, then cut to about ``limit`` characters with the full length said."""
    return shorten(repr(value), limit)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""`` when none is close."""
    if len(word) > 100:  # no key or name is that long; difflib's cost grows with the product of lengths
        return ""
    close = difflib.get_close_matches(word.lower().replace(" ", "_"), list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""
