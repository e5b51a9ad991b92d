"""Every file the job reads or writes at a user's path or URL goes through here: a local path is a URL without a
scheme. (Files of this machine alone are opened directly: staging files under ``TMPDIR`` before they are put
here, the pod's service-account namespace, the demo's generated dataset.)

Built on fsspec, so ``s3://``, ``gs://``, ``az://`` and ``https://`` work wherever a local path
does. Rasters are not read through fsspec file objects (rasterio would read whole objects into
memory): :func:`gdal_path` turns a URL into the GDAL virtual path that streams byte ranges.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit

from odeon_job.errors import StorageError, deepest_reason
from odeon_job.redaction import redact
from odeon_job.storage.s3_settings import configure_fsspec, credentials_hint

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")

# fsspec protocol -> GDAL virtual file system prefix (the bucket or container follows).
_GDAL_PREFIXES = {
    "s3": "/vsis3/",
    "s3a": "/vsis3/",
    "gs": "/vsigs/",
    "gcs": "/vsigs/",
    "az": "/vsiaz/",
    "abfs": "/vsiaz/",
}


def scheme(url: str) -> str:
    """The URL's scheme in lower case, ``""`` for a plain local path."""
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else ""


def _scheme_prefix(url: str) -> str:
    """``scheme://`` of a URL that has one (the callers asked ``is_local`` first)."""
    match = _SCHEME.match(url)
    if match is None:
        raise ValueError(f"{url!r} has no scheme")
    return match.group(0)


def is_local(url: str) -> bool:
    return scheme(url) in ("", "file")


def _local_path(url: str) -> str:
    return url[len("file://") :] if scheme(url) == "file" else url


def join(base: str, *parts: str) -> str:
    """Join path components below ``base``, keeping its scheme."""
    if is_local(base):
        return os.path.join(_local_path(base), *parts)
    return posixpath.join(base, *parts)


def basename(url: str) -> str:
    """The last part of ``url``'s path: a URL's query and fragment are not part of it (a presigned URL's query is
    a credential, never a file name)."""
    path = _local_path(url) if is_local(url) else urlsplit(url).path
    return os.path.basename(path.rstrip("/"))


def parent(url: str) -> str:
    """The folder holding ``url`` (``""`` for a bare local file name: the working directory)."""
    if is_local(url):
        return os.path.dirname(_local_path(url))
    prefix = _scheme_prefix(url)
    return prefix + posixpath.dirname(url[len(prefix) :].rstrip("/"))


def resolve(path: str, base_dir: str) -> str:
    """``path`` as written in a file of ``base_dir``: relative paths are relative to that folder."""
    if scheme(path) or os.path.isabs(path):
        return _local_path(path) if scheme(path) == "file" else path
    if is_local(base_dir):
        return os.path.normpath(os.path.join(_local_path(base_dir), path)) if base_dir else path
    prefix = _scheme_prefix(base_dir)
    return prefix + posixpath.normpath(posixpath.join(base_dir[len(prefix) :], path))


def resolver(base_dir: str) -> Callable[[str], str]:
    """:func:`resolve` for many paths of one folder (the rows of a CSV), with the folder's work done once:
    a 100,000-row CSV resolves in a fifth of the time."""
    if not base_dir:
        return lambda path: resolve(path, base_dir)
    local = is_local(base_dir)
    prefix = "" if local else _scheme_prefix(base_dir)
    root = (_local_path(base_dir) if local else base_dir[len(prefix) :]).rstrip("/") or "/"
    normalise = os.path.normpath if local else posixpath.normpath

    def resolve_one(path: str) -> str:
        if "://" in path or path.startswith("/"):
            return resolve(path, base_dir)
        joined = f"{root}/{path}" if root != "/" else f"/{path}"
        if "/." in joined or "//" in joined or joined.startswith("."):
            joined = normalise(joined)
        return prefix + joined

    return resolve_one


def gdal_path(url: str) -> str:
    """The path GDAL (and rasterio) should open for ``url``, streaming only the bytes it needs."""
    kind = scheme(url)
    if kind in ("", "file"):
        return _local_path(url)
    if kind in ("http", "https"):
        return "/vsicurl/" + url
    if kind in _GDAL_PREFIXES:
        refuse_credentials(url)
        return _GDAL_PREFIXES[kind] + url[len(kind) + 3 :]
    raise StorageError(
        f"{url}: rasters cannot be read from '{kind}://' URLs (supported: local paths, file, s3, gs, az, http, https)"
    )


def describe_failure(error: BaseException) -> str:
    """Why a read or write failed, in the user's terms (the URL is added by the caller)."""
    if isinstance(error, FileNotFoundError):
        message = str(error.args[0]) if error.args else ""
        return "the bucket does not exist" if "bucket does not exist" in message.lower() else "not found"
    if isinstance(error, IsADirectoryError):
        return "is a folder, not a file"
    if isinstance(error, PermissionError):
        detail = error.strerror or (error.args[0] if error.args and isinstance(error.args[0], str) else "")
        return f"access denied ({detail})" if detail and "denied" not in detail.lower() else "access denied"
    kind = type(error).__name__
    if kind == "NoCredentialsError":  # botocore's, raised before any request is made
        return (
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile, or an IAM role for the pod)"
        )
    if kind in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionRefusedError"):
        return f"cannot connect to the storage endpoint ({error})"
    reason = getattr(error, "strerror", None) or str(error) or kind
    return reason


def _is_storage_failure(error: BaseException) -> bool:
    """The exceptions of fsspec backends that mean "this storage operation failed" rather than a bug."""
    module = type(error).__module__.split(".")[0]
    return isinstance(error, (OSError, ValueError)) or module in ("botocore", "aiobotocore", "aiohttp", "s3fs")


@contextlib.contextmanager
def _reporting(url: str, action: str) -> Iterator[None]:
    """Turn the ways a read or write can fail into one-line :class:`StorageError`s naming ``url``."""
    try:
        yield
    except StorageError:
        raise
    except ImportError as error:
        raise StorageError(f"{url}: cannot {action}: {error}") from error
    except Exception as error:
        if not _is_storage_failure(error):
            raise
        reason = describe_failure(error)
        if isinstance(error, PermissionError) and scheme(url) in ("s3", "s3a"):
            reason += credentials_hint()
        if isinstance(error, (FileNotFoundError, IsADirectoryError)):
            raise StorageError(f"{url}: {reason}") from error
        raise StorageError(f"{url}: cannot {action}: {reason}") from error


#: Object stores whose credentials come from the environment, never from the URL.
_OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs")


def refuse_credentials(url: str) -> None:
    """An object-store URL carries no ``key:secret@``: the store would read it as a bucket name and echo it."""
    if scheme(url) in _OBJECT_STORES and "@" in url.split("/", 3)[2]:
        raise StorageError(
            f"{redact(url)}: credentials in an {scheme(url)}:// URL are never used: give them in the "
            "environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, from a Kubernetes Secret)"
        )


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem serving ``url`` and the path to use with it."""
    from fsspec.core import url_to_fs

    refuse_credentials(url)

    if scheme(url) in ("s3", "s3a"):
        configure_fsspec()  # endpoint, region, retries from the environment, read at each call
    with _reporting(url, "open"):
        return url_to_fs(url)


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    with _reporting(url, "check"):
        return bool(fs.exists(path))


def is_nonempty_folder(url: str) -> bool:
    fs, path = filesystem(url)
    with _reporting(url, "list"):
        return bool(fs.isdir(path) and fs.ls(path))


def size(url: str) -> int | None:
    """The size of the file ``url`` in bytes, None when the store does not say (a read will report errors)."""
    fs, path = filesystem(url)
    try:
        return int(fs.size(path))
    except Exception:  # noqa: BLE001 - missing files, HTTP servers without Content-Length: the read says why
        return None


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    with _reporting(url, "read"):
        return fs.cat_file(path)


def get_file(url: str, local_path: str) -> None:
    """Copy ``url`` into the local file ``local_path``, streamed (the way back of :func:`put_file`)."""
    fs, path = filesystem(url)
    with _reporting(url, "read"):
        fs.get_file(path, local_path)


def read_text(url: str) -> str:
    data = read_bytes(url)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise StorageError(f"{url}: not UTF-8 text ({error.reason} at byte {error.start})") from error


def remove(url: str) -> None:
    """Delete the file ``url`` if it exists."""
    fs, path = filesystem(url)
    with _reporting(url, "delete"):
        if fs.exists(path):
            fs.rm(path)


def remove_tree(url: str) -> None:
    """Delete the folder (or object prefix) ``url`` and everything under it, if it exists."""
    fs, path = filesystem(url)
    with _reporting(url, "delete"):
        if fs.exists(path):
            fs.rm(path, recursive=True)


def move(source: str, target: str) -> None:
    """Rename ``source`` to ``target`` (replacing it): atomic for local files, a copy then a delete on object
    stores."""
    if is_local(source) and is_local(target):
        with _reporting(source, "rename"):
            os.replace(_local_path(source), _local_path(target))
        return
    fs, path = filesystem(source)
    with _reporting(source, "rename"):
        fs.mv(path, filesystem(target)[1])


def makedirs(url: str) -> None:
    """Create the local folder ``url``; a no-op on object stores, which have no folders (s3fs would try
    to create the bucket, which needs a permission a training job should not have)."""
    if not is_local(url):
        return
    fs, path = filesystem(url)
    with _reporting(url, "create folder"):
        fs.makedirs(path, exist_ok=True)


def write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` so that ``url`` holds either the old content or the whole new one, never a part.

    Locally: a temporary file in the same folder, then an atomic rename. Object stores make a PUT
    visible only once it is complete.
    """
    if is_local(url):
        _write_local(url, lambda stream: stream.write(data))
        return
    fs, path = filesystem(url)
    with _reporting(url, "write"):
        fs.pipe_file(path, data)


def put_file(local_path: str, url: str) -> None:
    """Copy the local file ``local_path`` to ``url`` as :func:`write_bytes` writes (complete or not at all),
    streamed: a file larger than memory is never held in it."""
    if is_local(url):
        with open(local_path, "rb") as source:
            _write_local(url, lambda stream: shutil.copyfileobj(source, stream, 8 << 20))
        return
    fs, path = filesystem(url)
    with _reporting(url, "write"):
        fs.put_file(local_path, path)


def _write_local(url: str, write: Callable[[BinaryIO], object]) -> None:
    """``write`` the content into a temporary file beside the local ``url``, synced, then renamed onto it."""
    path = _local_path(url)
    with _reporting(url, "write"):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        handle, temporary = _new_part_file(path)
        try:
            with os.fdopen(handle, "wb") as stream:
                write(stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def _new_part_file(path: str) -> tuple[int, str]:
    """A new, empty ``.<name>.<random>.part`` file beside ``path``, opened for writing.

    Created with mode 0666 less the umask, as ``open()`` would create ``path`` itself (``mkstemp``'s 0600
    would leave every result unreadable to teammates on shared storage once renamed)."""
    folder, name = os.path.split(path)
    while True:
        temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.part")
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temporary
        except FileExistsError:
            continue


def write_text(url: str, text: str) -> None:
    write_bytes(url, text.encode("utf-8"))


@contextlib.contextmanager
def writing_staged(path: str) -> Iterator[None]:
    """Failures to write the staged file ``path`` (a full ``TMPDIR``, from Python or from GDAL) as one line naming
    it and where staged files go, as a failure to write an output names the output."""
    try:
        yield
    except StorageError:
        raise
    except Exception as error:
        if not (_is_storage_failure(error) or type(error).__module__.split(".")[0] == "rasterio"):
            raise
        reason = deepest_reason(error)
        if "no space left" not in reason.lower() and is_nearly_full(os.path.dirname(path) or "."):
            reason = f"no space left on device ({reason})"  # (libtiff says only "Write error")
        raise StorageError(
            f"{path}: cannot write: {reason} (files are staged under TMPDIR, "
            f"{tempfile.gettempdir()}: make room there, or set TMPDIR to a larger folder)"
        ) from error


def is_nearly_full(folder: str) -> bool:
    """Whether the file system of ``folder`` has less than 1 MB left (what a failed write there most likely meant)."""
    try:
        usage = os.statvfs(folder)
    except OSError:
        return False
    return usage.f_bavail * usage.f_frsize < 1 << 20


def staging_folder(purpose: str) -> str:
    """A new local folder for files that are written in pieces before they go to object storage.

    It lies under the system's temporary folder (``TMPDIR``, else ``/tmp``), which stays writable in a
    container with a read-only root filesystem; set ``TMPDIR`` to move it. Its name holds this process's id:
    the folders of processes that no longer run (a ``kill -9``, an OOM kill, on a machine that keeps its
    ``/tmp``) are removed first, so repeated kills do not fill the disk with half-stitched scenes.
    """
    remove_stale_staging(purpose)
    return tempfile.mkdtemp(prefix=f"odeon-{purpose}-{os.getpid()}-")


def remove_stale_staging(purpose: str) -> None:
    """Remove the staging folders of ``purpose`` whose process is gone (never one of a process still running)."""
    pattern = re.compile(rf"odeon-{re.escape(purpose)}-(\d+)-")
    for entry in os.scandir(tempfile.gettempdir()):
        found = pattern.match(entry.name)
        if not found or not entry.is_dir(follow_symlinks=False) or process_runs(int(found.group(1))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)


def process_runs(pid: int) -> bool:
    """Whether the process ``pid`` still runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running
        return True
    return True


def glob(pattern: str) -> list[str]:
    """The files matching ``pattern`` (``*`` within one folder), as URLs of the pattern's scheme, sorted."""
    fs, path = filesystem(pattern)
    with _reporting(pattern, "list"):
        found = sorted(fs.glob(path))
    if is_local(pattern):
        return found
    prefix = scheme(pattern) + "://"
    return [name if scheme(name) else prefix + name for name in found]
