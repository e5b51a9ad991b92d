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
from odeon_job.config.yaml_text import KeyPath, parse_yaml
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
            raise ConfigError("-c -: the standard input is empty (pipe the configuration, JSON or YAML, into odeon)")
        return text
    size = storage.size(source)
    if size is not None and size > MAX_CONFIG_BYTES:
        raise _too_large(source, size)
    return storage.read_text(source)


#: The endings of a YAML configuration's name; any other name is read as JSON, the specification's format.
YAML_SUFFIXES = (".yaml", ".yml")


def _is_yaml_name(source: str) -> bool:
    return source.split("?", 1)[0].lower().endswith(YAML_SUFFIXES)


def parse_config_text(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """The data of a configuration, JSON or YAML by its name (``-c -``: JSON when it opens with ``{``), and the
    line of each key where the format keeps it (YAML). A file whose text is the other format gets a hint."""
    if len(text) > MAX_CONFIG_BYTES:
        raise _too_large(source, len(text))
    as_yaml = _is_yaml_name(source) or (source == "<stdin>" and not text.lstrip().startswith(("{", "[")))
    if as_yaml:
        try:
            return parse_yaml(text, source)
        except ConfigError:
            if _parses(json.loads, text):
                raise ConfigError(f"{source}: invalid YAML, but valid JSON: name the file .json") from None
            raise
    try:
        return parse_json(text, source), {}
    except ConfigError as error:
        if isinstance(error.__cause__, json.JSONDecodeError) and _parses(yaml_mapping, text):
            raise ConfigError(
                f"{source}: not JSON (line {error.__cause__.lineno}, column {error.__cause__.colno}: "
                f"{error.__cause__.msg}), but it reads as YAML: name the file .yaml to have it read as YAML"
            ) from error
        raise


def _parses(parse: typing.Callable[[str], Any], text: str) -> bool:
    try:
        return isinstance(parse(text), dict)
    except Exception:  # noqa: BLE001 (any failure means "not that format")
        return False


def yaml_mapping(text: str) -> Any:
    return parse_yaml(text, "text")[0]


def load_config(source: str, overrides: typing.Sequence[str] = ()) -> JobConfig:
    """Read, parse and validate the configuration at ``source`` (JSON, or YAML by its name), with ``--set``
    ``overrides`` applied."""
    name = "<stdin>" if source == STDIN else source
    data, lines = parse_config_text(read_config_text(source), name)
    if overrides:
        data = apply_overrides(data, overrides, name)
        name += " with --set"
    return config_from_dict(data, name, lines)


def load_predict_config(
    source: str | None, options: dict[str, Any], overrides: typing.Sequence[str] = ()
) -> PredictConfig:
    """``odeon predict``'s configuration: the file at ``source`` (if any), the command line's ``options`` (those
    given) over it, then ``--set`` ``overrides``; validated, errors worded as the training's."""
    name = "<stdin>" if source == STDIN else source or "the command line"
    data, lines = parse_config_text(read_config_text(source), name) if source else ({}, {})
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
        raise ConfigError("\n".join(_with_source(name, describe_errors(error, lines)))) from error


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


def config_from_dict(data: Any, source: str = "config", lines: dict[KeyPath, int] | None = None) -> JobConfig:
    """Validate parsed configuration ``data``; ``lines``: the line of each key, for the error lines (YAML)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the configuration must be a JSON object, got {type(data).__name__}")
    data = upgrade_config(data, source)
    try:
        return JobConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError("\n".join(_with_source(source, describe_errors(error, lines or {})))) from error


def _with_source(source: str, problems: list[tuple[int | None, str]]) -> list[str]:
    return [f"{source}{f', line {line}' if line else ''}: {text}" for line, text in problems]
