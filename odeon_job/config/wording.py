"""pydantic's validation errors as one line per problem: the JSON path, what is wrong, a suggestion when one is
close."""

from __future__ import annotations

import functools
import json
import re
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from odeon_job.config.job_config import JobConfig
from odeon_job.errors import did_you_mean, quote
from odeon_job.redaction import shorten


def describe_errors(
    error: ValidationError, lines: typing.Mapping[tuple[str | int, ...], int] | None = None
) -> list[tuple[int | None, str]]:
    """One line per problem: the JSON path, what is wrong, and a suggestion when one is close; with the line of
    the file it concerns where ``lines`` (a key's path → its line, kept by the YAML reader) knows it."""
    return [
        (_line_of(tuple(detail["loc"]), lines or {}), _describe(detail)) for detail in error.errors(include_url=False)
    ]


def _line_of(loc: tuple[Any, ...], lines: typing.Mapping[tuple[str | int, ...], int]) -> int | None:
    path = tuple(part for part in loc if part != "[key]")
    while path:  # the deepest key the file has (a missing key: its object's)
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def _json_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad dict key: the key itself precedes it
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _describe(detail: Any) -> str:
    loc, kind, message = tuple(detail["loc"]), detail["type"], detail["msg"]
    path = _json_path(loc)
    if kind == "extra_forbidden":
        return f"{path}: unknown key{did_you_mean(str(loc[-1]), _keys_beside(loc))}{_belongs_elsewhere(loc)}"
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "literal_error":
        expected = [choice.strip("'") for choice in re.split(r", | or ", detail["ctx"]["expected"])]
        return (
            f"{path}: {quote(detail['input'])} is not one of {', '.join(expected)}"
            f"{did_you_mean(str(detail['input']), expected)}"
        )
    if kind == "odeon":
        field = (detail.get("ctx") or {}).get("field")
        if field:
            path = field if path == "(top level)" else f"{path}.{field}"
        return f"{path}: {message}"
    message = message.removeprefix("Value error, ")
    return f"{path}: {message}, got {_short(detail.get('input'))}"


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool, type(None))) else repr(value)
    return shorten(text, 60)


def _belongs_elsewhere(loc: tuple[Any, ...]) -> str:
    """Where the unknown key ``loc[-1]`` is a key, when it is one of another section (or of the top level)."""
    key, here = str(loc[-1]), ".".join(str(part) for part in loc[:-1])
    homes = [path for path in _key_homes().get(key, []) if path != here]
    if not homes:
        return ""
    places = " or ".join(home or "the top level" for home in homes)
    return f"; it belongs in {places} ({f'{homes[0]}.' if homes[0] else ''}{key})"


@functools.cache
def _key_homes() -> dict[str, list[str]]:
    """Every key of the configuration, with the dotted paths of the objects that hold it ("" the top level)."""
    homes: dict[str, list[str]] = {}
    stack: list[tuple[type[BaseModel], str]] = [(JobConfig, "")]
    while stack:
        model, path = stack.pop(0)
        for name, field in model.model_fields.items():
            homes.setdefault(name, []).append(path)
            inner = _model_in(field.annotation)
            if inner is not None and not _is_mapping(field.annotation):  # (a dict of models is not a section)
                stack.append((inner, f"{path}.{name}" if path else name))
    return homes


def _is_mapping(annotation: Any) -> bool:
    return typing.get_origin(annotation) is dict or any(_is_mapping(arg) for arg in typing.get_args(annotation))


def _keys_beside(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed where the unknown key ``loc[-1]`` was found."""
    model: type[BaseModel] | None = JobConfig
    for part in loc[:-1]:
        if model is not None and isinstance(part, str) and part in model.model_fields:
            model = _model_in(model.model_fields[part].annotation)
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None
