"""Reading a configuration: from a path, a URL or the standard input, with ``--set`` overrides, bounded in size
and nesting, then validated."""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import ValidationError

from odeon_job import storage
from odeon_job.config.job_config import JobConfig
from odeon_job.config.predict_config import PredictConfig
from odeon_job.config.upgrades import upgrade_config
from odeon_job.config.wording import describe_errors
from odeon_job.errors import ConfigError, quote

#: ``-c -``: the configuration is read from the standard input.
STDIN = "-"


#: The largest configuration accepted, in bytes (a real one is a few KB); ``--set`` values alike.
MAX_CONFIG_BYTES = 1_000_000


#: The deepest nesting of objects and lists accepted (a real configuration nests 4 levels).
MAX_CONFIG_DEPTH = 32


def _too_large(source: str, size: int | str) -> ConfigError:
    return ConfigError(
        f"{source}: {size} bytes, more than the {MAX_CONFIG_BYTES} a configuration may hold; is it the right file?"
    )


def read_config_text(source: str) -> str:
    """The text of the configuration at ``source``: a path, a URL, or ``-`` for the standard input;
    anything larger than :data:`MAX_CONFIG_BYTES` is refused before it is read whole."""
    if source == STDIN:
        import sys

        text = sys.stdin.read(MAX_CONFIG_BYTES + 1)
        if len(text) > MAX_CONFIG_BYTES:
            raise _too_large("-c -", f"more than {MAX_CONFIG_BYTES}")
        if not text.strip():
            raise ConfigError("-c -: the standard input is empty (pipe the JSON configuration into odeon)")
        return text
    size = storage.size(source)
    if size is not None and size > MAX_CONFIG_BYTES:
        raise _too_large(source, size)
    return storage.read_text(source)


def load_config(source: str, overrides: typing.Sequence[str] = ()) -> JobConfig:
    """Read, parse and validate the configuration at ``source``, with ``--set`` ``overrides`` applied."""
    name = "<stdin>" if source == STDIN else source
    data = parse_json(read_config_text(source), name)
    if overrides:
        data = apply_overrides(data, overrides, name)
        name += " with --set"
    return config_from_dict(data, name)


def load_predict_config(
    source: str | None, options: dict[str, Any], overrides: typing.Sequence[str] = ()
) -> PredictConfig:
    """``odeon predict``'s configuration: the file at ``source`` (if any), the command line's ``options`` (those
    given) over it, then ``--set`` ``overrides``; validated, errors worded as the training's."""
    name = "<stdin>" if source == STDIN else source or "the command line"
    data = parse_json(read_config_text(source), name) if source else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: the configuration must be a JSON object, got {type(data).__name__}")
    for key, value in options.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}  # (device_setup: the command line's keys over the file's)
        elif value is not None:
            data[key] = value
    if overrides:
        data = apply_overrides(data, overrides, name)
    try:
        return PredictConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError("\n".join(f"{name}: {line}" for line in describe_errors(error))) from error


def apply_overrides(data: Any, overrides: typing.Sequence[str], source: str = "config") -> Any:
    """Apply ``section.key=value`` overrides (``--set``) to the parsed JSON, before validation.

    The value is read as JSON when it parses (``5``, ``0.01``, ``true``, ``null``, ``[1, 2]``,
    ``"5"``), else taken as a string (``resnet34``, ``s3://bucket/run``); the schema then checks
    its type, like any other value. Missing sections or objects on the way are created.
    """
    if not isinstance(data, dict):
        return data
    for override in overrides:
        if len(override) > MAX_CONFIG_BYTES:
            raise _too_large(f"--set {quote(override, 60)}", len(override))
        path, sep, raw = override.partition("=")
        keys = path.strip().split(".")
        if not sep or not all(keys):
            raise ConfigError(
                f"--set {quote(override)}: expected KEY=VALUE with a dotted key, such as train_setup.epochs=5"
            )
        try:
            value = parse_json(raw, f"--set {quote(override, 60)}")
        except ConfigError as error:
            if not isinstance(error.__cause__, json.JSONDecodeError):
                raise  # duplicate keys, nesting
            value = raw
        target = data
        for depth, key in enumerate(keys[:-1]):
            child = target.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"--set {quote(override)}: {'.'.join(keys[: depth + 1])} is not an object in {source}"
                )
            target = child
        target[keys[-1]] = value
    return data


def parse_config(text: str, source: str = "config") -> JobConfig:
    return config_from_dict(parse_json(text, source), source)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects whose keys are unique (Python's json keeps the last of two silently)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _depth(data: Any) -> int:
    """How deeply objects and lists nest in ``data`` (walked without recursion)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
    return deepest


def parse_json(text: str, source: str = "config") -> Any:
    """Parse a configuration's JSON: size, nesting and duplicate keys refused with one line each."""
    if len(text) > MAX_CONFIG_BYTES:
        raise _too_large(source, len(text))
    try:
        data = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{source}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from error
    except _DuplicateKey as error:
        raise ConfigError(
            f"{source}: the key {quote(error.key)} appears twice in one object (JSON readers keep "
            "one of them silently): keep one"
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{source}: objects or lists nested too deeply (a configuration nests a few levels)"
        ) from None
    if _depth(data) > MAX_CONFIG_DEPTH:
        raise ConfigError(
            f"{source}: objects or lists nested more than {MAX_CONFIG_DEPTH} levels deep (a "
            "configuration nests a few levels)"
        )
    return data


def config_from_dict(data: Any, source: str = "config") -> JobConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the configuration must be a JSON object, got {type(data).__name__}")
    data = upgrade_config(data, source)
    try:
        return JobConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError("\n".join(f"{source}: {line}" for line in describe_errors(error))) from error
