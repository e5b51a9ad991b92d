"""A local SQLite MLflow store is created whole or not at all.

MLflow builds a new SQLite store in place: tables first, then some fifty schema migrations, over seconds. A pod
killed in between (an eviction on the first seconds of a run) left a database every later start failed on
(SQLAlchemy's "table already exists", or MLflow's "out-of-date schema"): a restarted pod crash-looped instead of
finishing the run. Here the store is built and migrated under a temporary name beside its place and linked into
place only once complete; a store left broken by an earlier version, with no run in it, is moved aside and built
again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import logging
import os
import re
import sqlite3

from odeon_job.errors import ConfigError
from odeon_job.storage import process_runs

log = logging.getLogger("odeon")

#: The store being built, beside its place: ``<name>.<pid>.part``, and SQLite's files beside it.
_PART = re.compile(r"\.(\d+)\.part(-journal|-wal|-shm)?$")
#: The files SQLite keeps beside a database (a hot journal is replayed into whatever database has its name).
_COMPANIONS = ("-journal", "-wal", "-shm")


def sqlite_path(tracking_uri: str) -> str | None:
    """The file of a ``sqlite:///`` tracking URI; None for any other store."""
    prefix = "sqlite:///"
    return tracking_uri[len(prefix) :] if tracking_uri.startswith(prefix) else None


def ensure_store(path: str, artifact_root: str) -> str:
    """A complete MLflow store at ``path`` (returned): the existing one when MLflow opens it, else a new one
    (``artifact_root`` for its default experiment), made whole before it appears at ``path``."""
    if os.path.exists(path):
        problem = _opening_problem(path, artifact_root)
        if problem is None:
            return path
        runs = _run_count(path)
        if runs:
            raise ConfigError(
                f"the MLflow store {path} holds {runs} run(s) but MLflow cannot open it ({problem}): "
                f"upgrade it (mlflow db upgrade sqlite:///{path}), or set "
                "output_setup.mlflow_tracking_uri to another store"
            )
        aside = f"{path}.broken-{dt.datetime.now():%Y%m%d-%H%M%S}"
        for suffix in ("", *_COMPANIONS):  # its journal goes with it, never into the new store
            if os.path.exists(path + suffix):
                os.replace(path + suffix, aside + suffix)
        log.warning(
            "mlflow: the store %s was left half-built (by a process killed while creating it: %s) and holds "
            "no run; moved aside to %s and built again",
            path,
            problem,
            aside,
        )
    _remove_stale_parts(path)
    partial = f"{path}.{os.getpid()}.part"
    try:
        _build(partial, artifact_root)
        _publish(partial, path)
    finally:
        for suffix in ("", *_COMPANIONS):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial + suffix)
    return path


def _build(path: str, artifact_root: str) -> None:
    """Create and migrate a store at ``path`` (MLflow's own code), or open it as it is; then close it. MLflow keeps
    one engine per URI for the whole process: it is dropped, so that nothing opened here outlives a store moved
    aside (its pooled connections would go on reading the old file under the same name)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    uri = f"sqlite:///{path}"
    try:
        SqlAlchemyStore(uri, artifact_root)
    finally:
        engine = getattr(SqlAlchemyStore, "_engine_map", {}).pop(uri, None)
        if engine is not None:
            engine.dispose()


def _publish(partial: str, path: str) -> None:
    """Give the complete store ``partial`` the name ``path``, unless a store appeared there meanwhile (another run
    starting in the same output folder): a hard link never replaces a file another process may be writing to."""
    if not os.path.exists(path):  # a journal left without its database must not be replayed into the new one
        for suffix in _COMPANIONS:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
    try:
        os.link(partial, path)
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links: a rename, checked first
        if not os.path.exists(path):
            os.rename(partial, path)


def _opening_problem(path: str, artifact_root: str) -> str | None:
    """Why MLflow cannot open the store at ``path`` as it stands (None: it can); a locked database is not a
    problem of the store's (another process is writing to it)."""
    try:
        _build(path, artifact_root)
    except Exception as error:  # noqa: BLE001 - SQLAlchemy's and MLflow's errors, told apart by their text
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "locked" in text.lower():
            return None
        return text[:300]
    return None


def _run_count(path: str) -> int:
    """Runs recorded in the store at ``path`` (0 when it has no table of runs)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            return int(connection.execute("select count(*) from runs").fetchone()[0])
    except sqlite3.Error:
        return 0


def _remove_stale_parts(path: str) -> None:
    """Stores left half-built under a temporary name by processes that no longer run (a kill -9)."""
    for part in glob.glob(glob.escape(path) + ".*.part*"):
        found = _PART.search(part)
        if found and not process_runs(int(found.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(part)
