"""The package's import graph, computed from the source, keeps the layering of docs/design.md.

Every ``import`` and ``from ... import`` statement counts, those inside functions too: an
import deferred into a function still ties the two modules together.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = "astrosleuth_astro"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Layer of each module (prefix match, longest wins). A module may import only modules of
#: a lower layer, or of its own layer when both share a subpackage (docs/design.md).
LAYERS = {
    "errors": 0,
    "_version": 0,
    "cache": 0,
    "io": 1,
    "resample": 1,
    "stretch": 1,
    "noise": 2,
    "archs": 1,
    "models": 2,
    "conserve": 2,
    "consistency": 3,
    "defects": 1,
    "stars": 2,
    "stars.protect": 3,
    "preview": 2,
    "engine": 3,
    "pipeline": 4,
    "api": 5,
    "batch": 6,
    "sim": 6,
    "metrics": 7,
    "compare": 8,
    "bench": 8,
    "demo": 8,
    "runner": 8,
    "train": 9,
    "cli": 10,
    "siril": 10,
}

#: Modules nothing else in the package may import (front-ends and tools).
TOP = ("cli", "siril", "train", "bench", "runner")
#: Modules allowed to sit on top of everything (the package entry points).
ENTRY = {PACKAGE, f"{PACKAGE}.__main__", f"{PACKAGE}.train.__main__"}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _target(mod: str, path: Path, node: ast.ImportFrom) -> str | None:
    if not node.level:
        return node.module
    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """``{module: {package modules it imports}}``, from the source of every module."""
    mods = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom):
                target = _target(mod, path, node)
                if target and target.split(".")[0] == PACKAGE:
                    for alias in node.names:
                        sub = f"{target}.{alias.name}"
                        names.append(sub if sub in mods else target)
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
            for name in names:
                while name not in mods and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name != mod and name in mods:
                    graph[mod].add(name)
        graph.setdefault(mod, set())
    return dict(graph)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer(mod: str) -> int:
    rel = mod.removeprefix(PACKAGE + ".").split(".")
    for n in range(len(rel), 0, -1):
        key = ".".join(rel[:n])
        if key in LAYERS:
            return LAYERS[key]
    raise KeyError(f"{mod}: no layer in tests/test_layout.py LAYERS; add it (docs/design.md)")


def _top_level(mod: str) -> str:
    return mod.removeprefix(PACKAGE + ".").split(".")[0]


def test_the_graph_finds_imports_inside_functions():
    # The scanner itself: a deferred import must count, or cycles would hide in functions.
    graph = import_graph()
    assert f"{PACKAGE}.runner" in graph[f"{PACKAGE}.cli.upscale"]  # deferred into a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert found == [], f"import cycles: {found}"


def test_every_module_has_a_layer():
    for mod in import_graph():
        if mod not in ENTRY:
            layer(mod)


def test_no_upward_imports():
    bad = []
    for mod, targets in import_graph().items():
        if mod in ENTRY:
            continue
        for target in targets:
            if target in ENTRY or target == PACKAGE:
                bad.append(f"{mod} -> {target} (the package entry point)")
            elif layer(target) > layer(mod) or (
                layer(target) == layer(mod) and _top_level(target) != _top_level(mod)
            ):
                bad.append(f"{mod} [{layer(mod)}] -> {target} [{layer(target)}]")
    assert bad == [], "upward or sideways imports:\n" + "\n".join(sorted(bad))


@pytest.mark.parametrize("top", TOP)
def test_front_ends_and_tools_are_imported_by_nobody(top):
    users = sorted(
        mod
        for mod, targets in import_graph().items()
        if _top_level(mod) != top
        and mod not in ENTRY
        and any(_top_level(t) == top for t in targets)
        # the CLI is the front-end that dispatches to every tool
        and _top_level(mod) != "cli"
    )
    assert users == [], f"{top} is imported by {users}"


CORE = [
    "astrosleuth_astro",
    "astrosleuth_astro.io",
    "astrosleuth_astro.stretch",
    "astrosleuth_astro.models",
    "astrosleuth_astro.engine.tiles",
    "astrosleuth_astro.engine.backends",
    "astrosleuth_astro.resample",
    "astrosleuth_astro.pipeline",
    "astrosleuth_astro.api",
]
OUTER = ["cli", "siril", "train", "batch", "compare", "runner"]


def test_core_imports_no_outer_layer_and_no_torch():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + "mods = sorted(sys.modules)\n"
        + f"outer = [m for m in mods if m.startswith('astrosleuth_astro.') and m.split('.')[1] in {OUTER!r}]\n"
        + "print(outer)\n"
        + "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    outer, torch_loaded = proc.stdout.strip().splitlines()
    assert outer == "[]"
    assert torch_loaded == "False"


#: Longest module allowed (lines). The issue's "about 500 lines, one job": the modules above
#: 500 each do one job (docs/design.md lists them); a module that grows past this limit
#: is split before it lands.
MAX_MODULE_LINES = 650


def test_no_module_is_too_long():
    long = {
        str(path.relative_to(ROOT)): n
        for path in ROOT.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"split these modules (over {MAX_MODULE_LINES} lines): {long}"
