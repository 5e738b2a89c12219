"""No import cycle among the modules of hrms_pipelines: each package reads top-down.

The graph is read from the source with `ast`, the way grimp builds it by default: every import
statement of a module counts, at module level, inside a function or under `if TYPE_CHECKING:` (an
import deferred into a function, or kept for type hints only, to dodge a cycle still makes the two
modules depend on each other: neither reads without the other). `from a.b import c` points at the
module a.b.c when there is one, else at a.b; a package is its `__init__`. Each cycle is reported as
the modules it runs through, with the line of each import."""

from __future__ import annotations

import ast
from pathlib import Path

import hrms_pipelines

PACKAGE = "hrms_pipelines"
ROOT = Path(hrms_pipelines.__file__).resolve().parent


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node of a module, wherever it stands."""
    return (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the first such import}, within the package only."""
    modules = module_files()
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                # `import a.b.c` of a module that is not one of ours (or a name inside one): its nearest module
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target.split(".")[0] == PACKAGE and target != name:
                    graph[name].setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest cycle through each tangle of modules (a strongly connected component)."""
    return [one_cycle(graph, set(component)) for component in tangles(graph)]


def tangles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(root: str) -> None:
        nonlocal counter
        work = [(root, iter(sorted(graph[root])))]
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
                    work.append((child, iter(sorted(graph[child]))))
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
                    components.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return components


def one_cycle(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """A shortest cycle through the first module of a component (breadth-first back to it)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child not in component:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, node, start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    modules = module_files()
    steps = [f"{a} -> {b} ({modules[a].relative_to(ROOT.parent)}:{graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return "; ".join(steps)


def test_the_graph_sees_relative_deferred_and_type_checking_imports():
    graph = import_graph()
    # definitions.py imports the jobs of every area at module level
    assert "hrms_pipelines.backups.jobs" in graph["hrms_pipelines.definitions"]
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hrms_pipelines import roles\n"
              "def f():\n    from . import settings\n")
    found = list(_imports(ast.parse(source)))
    assert [(n.module, n.level, n.names[0].name) for n in found] == [
        ("typing", 0, "TYPE_CHECKING"), ("hrms_pipelines", 0, "roles"), (None, 1, "settings")]
    # a made-up cycle is found and described once, a module that only points into it is not part of it
    assert cycles({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycles():
    graph = import_graph()
    found = tangles(graph)
    assert not found, f"{len(found)} tangle(s) of modules that import each other in {PACKAGE}:\n" + "\n".join(
        f"  {', '.join(component)}\n      e.g. {describe(graph, one_cycle(graph, set(component)))}" for component in found)
