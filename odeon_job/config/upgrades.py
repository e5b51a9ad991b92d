"""Configurations (and checkpoints' hyperparameters) of an older format, brought to the current one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from odeon_job.config.values import CONFIG_VERSION, SPLITS
from odeon_job.errors import ConfigError


def _resolution_pairs_per_split(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 → 2: a two-number ``resolution`` list was an [x, y] pixel size; version 2 reads lists as ODEON
    does (one entry per split) and refuses two different numbers as ambiguous, so a version-1 pair with x != y
    becomes the same pair for every split."""
    source = data.get("data_source")
    value = source.get("resolution") if isinstance(source, dict) else None
    if (
        isinstance(source, dict)
        and isinstance(value, list)
        and len(value) == 2
        and not any(isinstance(v, list) for v in value)
        and value[0] != value[1]
    ):
        data["data_source"] = {**source, "resolution": {split: list(value) for split in SPLITS}}
    return data


#: ``UPGRADES[n]`` turns a configuration of version n into version n + 1.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _resolution_pairs_per_split}


def upgrade_config(data: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """``data`` (a configuration as JSON, from a file or a checkpoint) in the current version's format.

    Each entry of :data:`UPGRADES` turns version n into n + 1 (renamed keys, moved sections); a
    configuration without ``config_version`` is taken as the current one (the specification's examples
    have none)."""
    version = data.get("config_version", CONFIG_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return data  # the schema reports it
    if version > CONFIG_VERSION:
        raise ConfigError(
            f"{source}: config_version {version} was written by a later version of odeon-job (this one "
            f"reads up to {CONFIG_VERSION}): upgrade odeon-job"
        )
    for step in range(version, CONFIG_VERSION):
        data = UPGRADES[step](dict(data))
    return {**data, "config_version": CONFIG_VERSION} if version != CONFIG_VERSION else data
