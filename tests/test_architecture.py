"""The import graph of latkit's own modules: layers point down, and no module-level cycles.

Every module is parsed (not imported) and each ``import latkit...`` /
``from latkit... import ...`` is resolved to the module it loads.

* Layers: ``devices -> profiler -> lut -> predictors -> search -> cli`` (``latkit``'s
  front door — ``latkit/__init__.py``, ``latkit.api``, ``latkit.cli`` — on top; the
  generic helpers ``latkit.core.errors``, ``latkit.core.registry``, ``latkit.core.files``,
  ``latkit._version``, ``latkit.core.cache`` at the bottom). A module may import its own
  layer or a lower one, at module level or inside a function: a lazy import is still
  a dependency.
* Cycles: only imports that run when the module is imported count (module body,
  class bodies, ``try``/``if`` blocks at top level; not function bodies, not
  ``if TYPE_CHECKING:``). A cycle among lazy imports cannot break an import.

The same parse checks the size of every function (house style: at most
:data:`MAX_FUNCTION_LINES` lines, the ``def`` line to the last line).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the one import package, under src/
PACKAGES = {"src/latkit": "latkit"}
BASE = {"latkit._version"}  # latkit.core.* is the base layer too (see _layer)
LAYERS = ["core", "devices", "profiler", "lut", "predictors", "search", "deploy", "pipeline", "front"]

# (importer, imported): upward imports that are known and allowed, with the reason
KNOWN_UPWARD: dict[tuple[str, str], str] = {}
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            mods[".".join((package, *rel))] = path
    return mods


MODULES = _modules()


def _layer(module: str) -> int:
    if module in BASE:
        return LAYERS.index("core")
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return LAYERS.index("front")  # latkit/__init__, latkit.api, latkit.cli.*, __main__


def _resolve(name: str) -> str | None:
    """The latkit module ``name`` loads (a name inside a module -> that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, eager_only: bool) -> Iterator[str]:
    """Resolved latkit modules imported by ``tree`` (eager_only: as the module loads)."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        node = stack.pop()
        if eager_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if eager_only and isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith("latkit"):
                target = _resolve(name)
                if target and target != module:
                    yield target
        stack.extend(ast.iter_child_nodes(node))


def _graph(eager_only: bool) -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[module] = set(_imports(tree, module, eager_only))
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_every_package():
    graph = _graph(eager_only=False)
    assert {"latkit.devices.base", "latkit.lut.store", "latkit.search.run", "latkit.core.registry"} <= set(graph)
    assert "latkit.profiler.spaces.base" in graph["latkit.search.framework.base"]
    assert "latkit.core.registry" in graph["latkit.devices.base"]


def test_no_module_level_import_cycles():
    cycle = _find_cycle(_graph(eager_only=True))
    assert cycle is None, "import cycle at module level: " + " -> ".join(cycle or [])


def test_no_upward_imports_between_layers():
    upward = []
    for module, targets in _graph(eager_only=False).items():
        for target in sorted(targets):
            if _layer(target) > _layer(module) and (module, target) not in KNOWN_UPWARD:
                upward.append(f"{module} ({LAYERS[_layer(module)]}) imports {target} "
                              f"({LAYERS[_layer(target)]})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_generic_base_imports_no_layer():
    graph = _graph(eager_only=False)
    for module in sorted(BASE & set(graph)):
        assert all(_layer(t) == 0 for t in graph[module]), (module, graph[module])


def test_the_checks_catch_a_cycle_and_an_upward_import():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    source = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from latkit.search.framework.base import get_algorithm\n"
        "if TYPE_CHECKING:\n    from latkit.lut.store import LutStore\n"
        "def f():\n    import latkit.predictors.base\n"
    )
    eager = set(_imports(source, "latkit.devices.base", eager_only=True))
    assert eager == {"latkit.search.framework.base"}
    lazy = set(_imports(source, "latkit.devices.base", eager_only=False))
    assert lazy == {"latkit.search.framework.base", "latkit.lut.store", "latkit.predictors.base"}
    assert _layer("latkit.search.framework.base") > _layer("latkit.devices.base") > _layer("latkit.core.registry")


def _long_functions(tree: ast.AST, limit: int) -> Iterator[tuple[int, str, int]]:
    """``(line, name, length)`` of each function or method of ``tree`` longer than ``limit`` lines."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                yield node.lineno, node.name, length


def test_the_length_check_counts_from_def_to_last_line():
    source = ast.parse(
        "@decorator\n"
        "def short():\n    return 1\n"
        "class A:\n    def long(self):\n" + "        x = 1\n" * 4 +
        "        def inner():\n            return 2\n"
    )
    assert list(_long_functions(source, 3)) == [(5, "long", 7)]
    assert list(_long_functions(source, 7)) == []


def test_no_function_over_60_lines():
    long = []
    for path in sorted(set(MODULES.values())) + sorted((ROOT / "benchmarks").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        long += [f"{path.relative_to(ROOT)}:{line} {name} ({n} lines)"
                 for line, name, n in _long_functions(tree, MAX_FUNCTION_LINES)]
    assert not long, f"over {MAX_FUNCTION_LINES} lines (split into named helpers):\n" + "\n".join(long)
