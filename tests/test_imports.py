"""The package import graph: no cycle between labelfield's subpackages, and the layering rules hold.

Walks every module under src/labelfield with `ast` (imports inside functions count too: a lazy import is
still a dependency) and builds the graph of `labelfield.<top>` -> `labelfield.<top>` edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

import labelfield

SRC = Path(labelfield.__file__).resolve().parent


def _top(module: str) -> str | None:
    """labelfield.train.trainer -> "train"; labelfield.run -> "run"; other packages -> None."""
    parts = module.split(".")
    if parts[0] != "labelfield" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> set[str]:
    """Absolute module names `path` imports (including `from labelfield.x import y` as labelfield.x.y)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def package_graph() -> dict[str, set[str]]:
    """Subpackage (or top-level module) -> the other ones it imports."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        src = rel.parts[0]
        edges = graph.setdefault(src, set())
        for mod in _imports(path):
            dst = _top(mod)
            if dst is not None and dst != src and ((SRC / dst).is_dir() or (SRC / f"{dst}.py").is_file()):
                edges.add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_package_import_cycle():
    cycle = find_cycle(package_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layering_rules():
    graph = package_graph()
    assert "train" not in graph["run"], "the run folder must load without training code"
    assert "train" not in graph["export"], "export never imports the trainer"
    assert "train" not in graph["models"] and "run" not in graph["models"]
