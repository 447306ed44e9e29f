"""
Tests for the shape of the C{beryl} package: no module imports, directly
or through others, a module that imports it back.  Every import counts:
module level, inside functions, and under C{TYPE_CHECKING}.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import beryl

Graph = dict[str, set[str]]


def package_modules(root: Path, name: str) -> dict[str, Path]:
    """
    Every module of the package at C{root}, by dotted name.
    """
    modules = {}
    for path in root.rglob("*.py"):
        parts = [name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph(modules: dict[str, Path], top: str) -> Graph:
    """
    Which package modules each module imports.  Importing a module of a
    subpackage also runs the subpackage's C{__init__}, so that counts as an
    import of it too (except for the top package, which every module is
    in).
    """
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[
                        : len(package.split(".")) - node.level + 1
                    ]
                    base = ".".join(parts + ([base] if base else []))
                targets = [
                    f"{base}.{alias.name}"
                    if f"{base}.{alias.name}" in modules
                    else base
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                for end in range(2, len(parts) + 1):
                    ancestor = ".".join(parts[:end])
                    if ancestor in modules and not name.startswith(ancestor + "."):
                        graph[name].add(ancestor)
    for name in graph:
        graph[name].discard(name)
    graph[top] = graph.get(top, set())
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """
    The strongly connected components with more than one module (Tarjan's
    algorithm, without recursion).
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


class ImportCycleTests(SynchronousTestCase):
    def test_detector_finds_cycles(self) -> None:
        """The cycle finder reports a cycle through three modules and no false ones."""
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
        self.assertEqual(cycles(graph), [["a", "b", "c"]])
        self.assertEqual(cycles({"a": {"b"}, "b": set()}), [])

    def test_graph_counts_every_import(self) -> None:
        """Imports under TYPE_CHECKING, inside functions and relative ones are edges."""
        root = Path(self.mktemp()) / "pkg"
        (root / "sub").mkdir(parents=True)
        files = {
            "__init__.py": "",
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from pkg.b import B\n",
            "b.py": "def f():\n    import pkg.sub.c\n",
            "sub/__init__.py": "",
            "sub/c.py": "from .. import a\n",
        }
        for name, text in files.items():
            (root / name).write_text(text, encoding="utf-8")
        graph = import_graph(package_modules(root, "pkg"), "pkg")
        self.assertEqual(graph["pkg.a"], {"pkg.b"})
        self.assertEqual(graph["pkg.b"], {"pkg.sub", "pkg.sub.c"})
        self.assertEqual(graph["pkg.sub.c"], {"pkg.a"})
        self.assertEqual(cycles(graph), [["pkg.a", "pkg.b", "pkg.sub.c"]])

    def test_no_import_cycles(self) -> None:
        """No module of beryl imports itself through other modules."""
        modules = package_modules(Path(beryl.__file__).parent, "beryl")
        self.assertEqual(cycles(import_graph(modules, "beryl")), [])
