"""Configurations written in YAML: parsed safely (no Python objects, no duplicate keys, no alias bombs), with the
values a JSON reader would give (YAML 1.2's ``true``/``false``, ``1e-3`` a number, dates left as text), and the
line of every key kept so that an error can name it."""

from __future__ import annotations

import re
from typing import Any

import yaml

from odeon_job.errors import ConfigError, quote

#: Nodes a configuration may expand to once its aliases (``*name``) are followed: a real one has a few hundred.
MAX_YAML_NODES = 100_000

KeyPath = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's core scalars: ``yes``/``no``/``on``/``off`` stay text, ``1e-3`` is a
    number, ``2026-12-03`` stays text (a version name, not a date)."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _expanded_size(root: yaml.Node, source: str) -> int:
    """How many nodes ``root`` stands for once aliases are followed, counted once per node (linear in the text,
    however the aliases multiply); a node that contains itself is refused."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            continue
        if id(node) in on_path:
            raise ConfigError(
                f"{source}: an alias refers to the object that contains it (line {node.start_mark.line + 1})"
            )
        on_path.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise ConfigError(
                    f"{source}: an alias refers to the object that contains it (line {child.start_mark.line + 1})"
                )
            stack.append((child, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _key_lines(root: yaml.Node, loader: _Loader) -> dict[KeyPath, int]:
    """The line (from 1) of every key and list item, by its path in the parsed data."""
    lines: dict[KeyPath, int] = {}
    stack: list[tuple[yaml.Node, KeyPath]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if isinstance(key, (str, int)) and (*path, key) not in lines:
                    lines[(*path, key)] = key_node.start_mark.line + 1
                    stack.append((value_node, (*path, key)))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*path, index)] = item.start_mark.line + 1
                stack.append((item, (*path, index)))
    return lines


def _refuse_duplicates(node: yaml.Node, loader: _Loader, source: str) -> None:
    stack = [node]
    seen_nodes: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen_nodes:
            continue
        seen_nodes.add(id(current))
        if isinstance(current, yaml.MappingNode):
            keys: set[Any] = set()
            for key_node, _ in current.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise ConfigError(
                        f"{source}: line {key_node.start_mark.line + 1}: merge keys (<<) are not accepted: "
                        "write the keys out"
                    )
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise ConfigError(f"{source}: line {key_node.start_mark.line + 1}: a key must be text")
                if key in keys:
                    raise ConfigError(
                        f"{source}: line {key_node.start_mark.line + 1}: the key {quote(str(key))} appears twice "
                        "in one object (YAML readers keep one of them silently): keep one"
                    )
                keys.add(key)
        stack.extend(_children(current))


def parse_yaml(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """The data of a YAML configuration and the line of each of its keys; one line per problem, with its line."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise ConfigError(f"{source}: the YAML document is empty")
        size = _expanded_size(root, source)
        if size > MAX_YAML_NODES:
            raise ConfigError(
                f"{source}: its aliases expand to {size} values, more than the {MAX_YAML_NODES} a configuration "
                "may hold"
            )
        _refuse_duplicates(root, loader, source)
        data = loader.construct_document(root)
        return data, _key_lines(root, loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}: invalid YAML{where}: {error.problem or error.context}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: invalid YAML: {error}") from error
    except RecursionError:
        raise ConfigError(
            f"{source}: objects or lists nested too deeply (a configuration nests a few levels)"
        ) from None
    finally:
        loader.dispose()
