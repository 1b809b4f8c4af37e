"""The import graph of latkit's own modules: layers point down, and no cycles.

Every module is parsed (not imported). An import is any way a module loads another
latkit module:

* ``import latkit...`` / ``from latkit... import ...`` (relative too), at module level
  or inside a function: a lazy import is still a dependency;
* ``importlib.import_module("latkit.x")`` or ``__import__("latkit.x")`` with a literal
  string; a module that calls ``import_module`` with a computed name (a lookup table
  such as ``_LAZY`` in ``latkit/__init__.py``) imports every string constant in it that
  names a latkit module;
* the ``builtins=`` module names given to a :class:`latkit.core.registry.Registry`,
  which the registry imports on its first lookup (they must be literal strings, so
  this check can read them).

Checks:

* Layers, bottom to top: ``core`` (``latkit.core.*`` and ``latkit._version``) ->
  ``devices -> profiler -> lut -> predictors -> search -> deploy -> pipeline`` ->
  ``front`` (``latkit/__init__.py``, ``latkit.api``, ``latkit.cli``). A module may
  import its own layer or a lower one, by any of the means above, ``if TYPE_CHECKING:``
  imports included (a type hint on a higher layer is a dependency on it too).
  ``core`` imports no other layer.
* Cycles: every import that can run counts, module level and function level alike
  (``if TYPE_CHECKING:`` imports never run and do not). Two modules that need each
  other are one concept split in two, or share a piece that belongs lower. Registry
  built-ins are the one exception: a plug-in imports its registry to register, and the
  registry loads it by name, like an entry point; that back edge is the design.

The same parse checks the size of every function (house style: at most
:data:`MAX_FUNCTION_LINES` lines, the ``def`` line to the last line).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the one import package, under src/
PACKAGES = {"src/latkit": "latkit"}
BASE = {"latkit._version"}  # latkit.core.* is the base layer too (see _layer)
LAYERS = ["core", "devices", "profiler", "lut", "predictors", "search", "deploy", "pipeline", "front"]

# (importer, imported): upward imports that are known and allowed, with the reason
KNOWN_UPWARD: dict[tuple[str, str], str] = {}
MAX_FUNCTION_LINES = 60

# how an import happens: as the module loads, inside a function (or through a name
# table for import_module), only for the type checker, or as a registry built-in
EAGER, LAZY, TYPING, PLUGIN = "eager", "lazy", "typing", "plugin"
RUNS = {EAGER, LAZY}  # the imports that can execute, and so can close a cycle
ALL = RUNS | {TYPING, PLUGIN}


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


def _nodes(tree: ast.AST) -> Iterator[tuple[ast.AST, str]]:
    """Every node of ``tree`` with how an import there would happen (EAGER, LAZY, TYPING)."""
    stack = [(child, EAGER) for child in ast.iter_child_nodes(tree)]
    while stack:
        node, how = stack.pop()
        yield node, how
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack += [(child, TYPING) for child in node.body]
            stack += [(child, how) for child in node.orelse]
            continue
        if how == EAGER and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            how = LAZY
        stack += [(child, how) for child in ast.iter_child_nodes(node)]


def _callee(node: ast.Call) -> str | None:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _registry_builtins(node: ast.Call, module: str) -> list[str]:
    """The module names in ``Registry(..., builtins=(...))``; they must be literals."""
    names = []
    for keyword in node.keywords:
        if keyword.arg != "builtins":
            continue
        items = keyword.value.elts if isinstance(keyword.value, (ast.Tuple, ast.List)) else [keyword.value]
        for item in items:
            assert isinstance(item, ast.Constant) and isinstance(item.value, str), (
                f"{module}:{item.lineno}: Registry builtins must be literal module names "
                f"(so the architecture test can read them), not {ast.unparse(item)}")
            names.append(item.value)
    return names


def _import_names(node: ast.AST, package: str) -> list[str]:
    """The dotted names an ``import`` / ``from ... import`` statement loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the module's package
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        return [f"{base}.{a.name}" for a in node.names]
    return []


def _edges(tree: ast.AST, module: str) -> Iterator[tuple[str, str]]:
    """``(imported latkit module, how)`` for every import in ``tree`` (see the module doc)."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, str]] = []
    dynamic = False  # import_module with a computed name: read the module's string table
    for node, how in _nodes(tree):
        found += [(name, how) for name in _import_names(node, package)]
        if not isinstance(node, ast.Call):
            continue
        callee = _callee(node)
        if callee in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((arg.value, how))
            else:
                dynamic = True
        elif callee == "Registry":
            found += [(name, PLUGIN) for name in _registry_builtins(node, module)]
    if dynamic:
        found += [(n.value, LAZY) for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in MODULES]
    for name, how in found:
        target = _resolve(name) if name.startswith("latkit") else None
        if target and target != module:
            yield target, how


@functools.cache
def _all_edges() -> dict[str, tuple[tuple[str, str], ...]]:
    """Every module's ``(imported module, how)`` pairs, parsed once per test session."""
    edges = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges[module] = tuple(_edges(tree, module))
    return edges


def _graph(kinds: set[str]) -> dict[str, set[str]]:
    """Module -> the latkit modules it imports in one of the ways in ``kinds``."""
    return {module: {target for target, how in edges if how in kinds} for module, edges in _all_edges().items()}



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


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles of ``graph``, one per strongly connected tangle, until none is left."""
    graph = {node: set(targets) for node, targets in graph.items()}
    cycles = []
    while cycle := _find_cycle(graph):
        cycles.append(cycle)
        graph[cycle[-2]].discard(cycle[-1])  # cut the closing edge and look again
    return cycles


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """``importer (layer) imports imported (layer)`` for every upward edge of ``graph``."""
    return [f"{module} ({LAYERS[_layer(module)]}) imports {target} ({LAYERS[_layer(target)]})"
            for module, targets in sorted(graph.items()) for target in sorted(targets)
            if _layer(target) > _layer(module) and (module, target) not in KNOWN_UPWARD]


def test_the_graph_sees_every_package():
    graph = _graph(ALL)
    assert {"latkit.devices.base", "latkit.lut.store", "latkit.search.run", "latkit.core.registry"} <= set(graph)
    assert "latkit.profiler.spaces.base" in graph["latkit.search.framework.base"]
    assert "latkit.core.registry" in graph["latkit.devices.base"]
    # the lazy name table of the front door and a registry's built-ins are read too
    assert {"latkit.api", "latkit.lut.store", "latkit.devices"} <= graph["latkit"]
    assert "latkit.devices.onnxruntime_cpu" in graph["latkit.devices.base"]
    assert "latkit.devices.onnxruntime_cpu" not in _graph(RUNS)["latkit.devices.base"]


def test_no_import_cycles():
    cycles = _cycles(_graph(RUNS))
    assert not cycles, "import cycles (module or function level):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles)


def test_no_upward_imports_between_layers():
    upward = _upward(_graph(ALL))
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_core_imports_no_other_layer():
    graph = _graph(ALL)
    core = [m for m in graph if _layer(m) == 0]
    assert {"latkit._version", "latkit.core.registry", "latkit.core.errors"} <= set(core)
    for module in sorted(core):
        assert all(_layer(t) == 0 for t in graph[module]), (module, graph[module])


def _planted(source: str, module: str, kinds: set[str]) -> set[str]:
    return {target for target, how in _edges(ast.parse(source), module) if how in kinds}


def test_the_edges_read_every_kind_of_import():
    source = (
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "from latkit.search.framework.base import get_algorithm\n"
        "if TYPE_CHECKING:\n    from latkit.lut.store import LutStore\n"
        "def f():\n    import latkit.predictors.base\n"
        "    return importlib.import_module('latkit.pipeline.runner')\n"
        "def g():\n    return __import__('latkit.deploy.export')\n"
        "R = Registry('device', 'latkit.devices', builtins=('latkit.devices.litert_cpu',))\n"
    )
    module = "latkit.devices.base"
    assert _planted(source, module, {EAGER}) == {"latkit.search.framework.base"}
    assert _planted(source, module, {LAZY}) == {
        "latkit.predictors.base", "latkit.pipeline.runner", "latkit.deploy.export"}
    assert _planted(source, module, {TYPING}) == {"latkit.lut.store"}
    assert _planted(source, module, {PLUGIN}) == {"latkit.devices.litert_cpu"}


def test_a_name_table_for_import_module_is_read():
    source = (
        "import importlib\n"
        "_TABLE = {'run': 'latkit.pipeline.runner', 'schema': 'not.a.module'}\n"
        "def get(name):\n    return importlib.import_module(_TABLE[name])\n"
    )
    assert _planted(source, "latkit.devices.base", RUNS) == {"latkit.pipeline.runner"}


def test_a_registry_builtin_must_be_a_literal():
    source = "R = Registry('x', 'g', builtins=(*(f'latkit.devices.{m}' for m in ('a',)),))\n"
    with pytest.raises(AssertionError, match="literal module names"):
        list(_edges(ast.parse(source), "latkit.devices.base"))


def test_the_checks_catch_a_function_level_cycle_and_an_upward_import_module():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    planted = {
        "latkit.lut.calibration": "def f():\n    from latkit.lut.tables import T\n",
        "latkit.lut.tables": "from latkit.lut.calibration import C\n",
        "latkit.devices.base": (
            "import importlib\nfrom typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from latkit.devices.android import Android\n"
            "def run():\n    return importlib.import_module('latkit.pipeline.runner')\n"),
        "latkit.devices.android": "from latkit.devices.base import Device\n",
    }
    graph = {module: _planted(source, module, RUNS) for module, source in planted.items()}
    assert _cycles(graph) == [["latkit.lut.calibration", "latkit.lut.tables", "latkit.lut.calibration"]]
    assert _upward(graph) == ["latkit.devices.base (devices) imports latkit.pipeline.runner (pipeline)"]
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
