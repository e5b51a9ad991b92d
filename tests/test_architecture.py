"""docs/architecture.md tells the truth: every module of odeon_job/ is in exactly one of its layers, in that
layer's folder, every module it names exists, the import graph (function-level imports included) has no cycle,
and no module imports from a layer above its own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "odeon_job"
DOCUMENT = ROOT / "docs" / "architecture.md"


def _modules() -> dict[str, Path]:
    """Module names relative to the package (``data.grid``; ``data`` for a package's __init__, ``__init__`` for
    the package's own)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts)
        modules[name] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules ``name`` imports, anywhere in it (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                module = ".".join([*(["odeon_job"] + base), *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        for target in targets:
            if target == "odeon_job" or not target.startswith("odeon_job."):
                continue
            relative = target[len("odeon_job.") :]
            while relative and relative not in modules:
                relative = relative.rpartition(".")[0]
            if relative and relative != name:
                found.add(relative)
                break
    return found


def _rows() -> list[tuple[int, list[str], list[str]]]:
    """The document's table of layers: (layer number, its folders, its modules)."""
    rows = []
    for line in DOCUMENT.read_text().splitlines():
        row = re.match(r"\| (\d+) [^|]+\| ([^|]+) \| ([^|]+) \|", line)
        if row:
            folders = [folder.rstrip("/") for folder in re.findall(r"`([^`]+/)`", row.group(2))]
            rows.append((int(row.group(1)), folders, re.findall(r"`([^`]+)`", row.group(3))))
    return rows


def _layers() -> dict[str, int]:
    """Module → layer number, from the document's table of layers."""
    layers: dict[str, int] = {}
    for number, _, modules in _rows():
        for module in modules:
            assert module not in layers, f"{module} is in two layers"
            layers[module] = number
    return layers


def test_every_module_is_in_one_layer_and_every_named_module_exists() -> None:
    modules, layers = _modules(), _layers()
    assert layers, "no table of layers in docs/architecture.md"
    assert sorted(set(modules) - set(layers)) == [], "modules missing from docs/architecture.md"
    assert sorted(set(layers) - set(modules)) == [], "docs/architecture.md names modules that do not exist"


def test_the_folders_are_the_layers() -> None:
    """A module's layer is its folder's; top-level modules are the foundation (the last layer), but __main__."""
    rows = _rows()
    folder_layer = {folder: number for number, folders, _ in rows for folder in folders}
    foundation = max(number for number, _, _ in rows)
    misplaced = []
    for name, layer in _layers().items():
        top = name.split(".")[0]
        expected = folder_layer.get(top, foundation if name != "__main__" else 1)
        if layer != expected:
            misplaced.append(f"{name}: layer {layer}, but its place says {expected}")
    assert sorted(folder_layer) == ["commands", "config", "data", "outputs", "process", "storage", "tasks", "training"]
    assert misplaced == []


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    modules, layers = _modules(), _layers()
    upward = [
        f"{name} (layer {layers[name]}) imports {imported} (layer {layers[imported]})"
        for name, path in modules.items()
        for imported in sorted(_imports(name, path, modules))
        if layers[imported] < layers[name]
    ]
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[str] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for imported in sorted(graph[name]):
            if state.get(imported) == 1:
                cycles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []
