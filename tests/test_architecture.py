"""The layering of docs/architecture.md, checked on the source: imports go one way, no cycles.

Every module's imports are read with ``ast`` (module level and inside functions alike), so an
import hidden in a function to dodge a cycle still counts. The table of allowed imports is
parsed from docs/architecture.md, so the document and this test cannot drift apart.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> package name, as pyproject.toml's package-dir maps them.
FOLDERS = {
    "nanoedge": "nanoedge",
    "export": "nanoedge.export",
    "runtime": "nanoedge.runtime",
    "quantize": "nanoedge.quantize",
    "targets": "nanoedge.targets",
    "bench": "bench",
}
LAYERS = ("nanoedge.cli", "bench", "nanoedge.export", "nanoedge.quantize", "nanoedge.runtime", "nanoedge.targets", "nanoedge.core")
# Cycles the document names as known exceptions, as sorted module tuples (none left: the
# quantize split removed recipes <-> weight_only).
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """Every module ``name`` imports, as (module, line); relative imports resolved."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, node.lineno))
            # ``from pkg import sub`` imports the submodule pkg.sub
            found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names if f"{module}.{alias.name}" in MODULES]
    return found


def _ours(module: str) -> bool:
    return module == "nanoedge" or module.startswith(("nanoedge.", "bench."))


def _layer(module: str) -> str:
    if module in ("nanoedge", "nanoedge.__main__"):
        return "nanoedge.core" if module == "nanoedge" else "nanoedge.cli"
    for layer in LAYERS:
        if module == layer or module.startswith(layer + "."):
            return layer
    raise AssertionError(f"module {module} belongs to no layer of docs/architecture.md")


def _allowed() -> dict[str, set[str]]:
    """The "layer | may import" table of docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table: dict[str, set[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 2 and cells[0] in LAYERS:
            table[cells[0]] = {c.strip() for c in cells[1].split(",") if c.strip()}
    missing = set(LAYERS) - set(table)
    assert not missing, f"docs/architecture.md has no row for {sorted(missing)}"
    return table


def _edges() -> dict[str, dict[str, int]]:
    """module -> {imported module of ours: line}, parent packages included (they run too)."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        targets: dict[str, int] = {}
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")) + 1)}
        for module, line in _imports(name, path):
            if not _ours(module):
                continue
            while module not in MODULES and "." in module:  # ``from pkg.mod import attr``
                module = module.rsplit(".", 1)[0]
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                if target in MODULES and target != name and (target == module or target not in ancestors):
                    targets.setdefault(target, line)
        graph[name] = targets
    return graph


def test_the_document_lists_every_layer_and_only_downward_arrows():
    table = _allowed()
    order = {layer: i for i, layer in enumerate(LAYERS)}
    for layer, allowed in table.items():
        for other in allowed:
            assert other in order, f"docs/architecture.md: unknown layer {other!r}"
            assert order[other] > order[layer] or {layer, other} == {"nanoedge.cli", "bench"}, f"{layer} -> {other} points up"
    assert "nanoedge.quantize" not in table["nanoedge.export"], "export never imports quantize"
    assert not table["nanoedge.core"], "the base layer imports nothing of ours"


def test_every_import_between_layers_is_allowed():
    table = _allowed()
    wrong = []
    for name, targets in _edges().items():
        for target, line in targets.items():
            source_layer, target_layer = _layer(name), _layer(target)
            if source_layer != target_layer and target_layer not in table[source_layer]:
                wrong.append(f"{MODULES[name].relative_to(ROOT)}:{line} imports {target} ({source_layer} -> {target_layer})")
    assert not wrong, "imports docs/architecture.md does not allow:\n" + "\n".join(wrong)


def test_the_base_layer_imports_only_the_standard_library():
    wrong = []
    for name, path in MODULES.items():
        if _layer(name) != "nanoedge.core":
            continue
        for module, line in _imports(name, path):
            top = module.split(".")[0]
            if not _ours(module) and top not in sys.stdlib_module_names and top != "__future__":
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "the base layer must run without any extra:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, dict[str, int]]) -> list[tuple[str, ...]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(tuple(sorted(component)))
    return found


def test_no_import_cycles_between_modules():
    cycles = [c for c in _cycles(_edges()) if c not in KNOWN_CYCLES]
    assert not cycles, "import cycles (an import inside a function counts):\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b": 1}, "b": {"a": 1}}, [("a", "b")]),
    ({"a": {"b": 1}, "b": {"c": 1}, "c": {}}, []),
    ({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}, [("a", "b", "c")]),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert _cycles(graph) == expected


def test_function_level_imports_are_seen(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from nanoedge.quantize.graphs import load_model\n")
    assert ("nanoedge.quantize.graphs", 2) in _imports("nanoedge.export.mod", source)


_RAW_MANIFEST = re.compile(r"manifest\w*\._?data\b|\.manifest\._data\b|[\"\']nanoedge\.json[\"\']")


def test_only_the_manifest_module_touches_the_package_file_raw():
    """Readers and writers go through Manifest's accessors and named edits (issue 17)."""
    owner = ROOT / "nanoedge" / "core" / "manifest.py"
    wrong = []
    for name, path in MODULES.items():
        if path == owner:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _RAW_MANIFEST.search(line):
                wrong.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not wrong, "raw manifest use outside nanoedge/core/manifest.py:\n" + "\n".join(wrong)


def test_every_package_says_what_lives_there_and_what_it_may_import():
    """A reader sees the layers from the tree: each ``__init__.py`` opens with two lines."""
    missing = []
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False) or ""
        lines = doc.splitlines()
        if len(lines) < 2 or not lines[0].strip() or "import" not in lines[1]:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, "package docstrings without a what-lives-here / may-import opening:\n" + "\n".join(missing)
