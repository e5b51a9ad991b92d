"""Reading checkpoints, ``.pth`` and weights files without ever running code from them.

Every such file is loaded with ``torch.load(..., weights_only=True)``: tensors, numbers, strings and
containers only. Anyone who can write a shared bucket could otherwise plant a checkpoint whose
unpickling runs a command in the training pod. A file that needs more is refused, naming it; a file
that is cut short or corrupt is reported as damaged (a resume may then fall back to an older one).
"""

from __future__ import annotations

import io
from typing import Any

from odeon_job import storage
from odeon_job.errors import StorageError
from odeon_job.redaction import shorten


class UnsafeModelFile(StorageError):
    """The file holds objects that would need code to rebuild: refused, nothing in it was run."""


class DamagedModelFile(StorageError):
    """The file is not a complete torch file (cut short by a kill, or corrupt)."""


#: What torch says when a weights-only load meets anything but plain values and tensors.
_UNSAFE_MARKER = "Weights only load failed"


def load_plain(url: str, data: bytes | None = None, map_location: Any = "cpu") -> Any:
    """The content of the torch file at ``url`` (``data``: its bytes, when already read), plain values only."""
    import pickle
    import zipfile

    import torch

    data = storage.read_bytes(url) if data is None else data
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        zipfile.BadZipFile,
        KeyError,
        AttributeError,
        TypeError,
        IndexError,
    ) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if _UNSAFE_MARKER in str(error) and _is_whole_torch_file(data):
            raise UnsafeModelFile(
                f"{url}: refused: it holds objects that only code could rebuild, not just "
                "tensors and plain values; nothing in it was run (was it written by this job? "
                "re-export it as a state dict)"
            ) from error
        raise DamagedModelFile(f"{url}: damaged: not a complete torch file ({shorten(reason, 200)})") from error


def _is_whole_torch_file(data: bytes) -> bool:
    """A complete zip archive (torch's format since 1.6) or a legacy torch pickle: its weights-only failure
    means objects that need code; anything else is a damaged file."""
    import zipfile

    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                return archive.testzip() is None
        except (zipfile.BadZipFile, EOFError, OSError):
            return False
    return data[:2] == b"\x80\x02"  # the pickle protocol of torch's legacy format
