"""No import circle among streamsrv's modules, counting imports inside functions too.

A circle hidden behind a function-level import (or ``if TYPE_CHECKING:``) still couples the modules both ways and
breaks as soon as someone moves the import to the top, so every import statement counts, wherever it is.

Importing ``streamsrv.a.b`` runs ``streamsrv/a/__init__.py`` first, so a module importing it depends on the package
``streamsrv.a`` too (unless the module is inside that package, which is then already being imported).
"""

from __future__ import annotations

import ast
from pathlib import Path

import streamsrv

ROOT = Path(streamsrv.__file__).resolve().parent
PACKAGE = "streamsrv"


def _module_name(path: Path) -> str:
    parts = (PACKAGE, *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imported_names(module: str, is_package: bool, tree: ast.AST) -> set[str]:
    """Every module name an import statement in ``tree`` names, at any depth, as written (absolute)."""
    out: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            out.add(target)
            # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one.
            out.update(f"{target}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the streamsrv modules (and packages whose ``__init__`` runs) importing it executes."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges: set[str] = set()
        for target in _imported_names(name, path.name == "__init__.py", tree):
            parts = target.split(".")
            for n in range(1, len(parts) + 1):
                dep = ".".join(parts[:n])
                # A package this module lives in is already being imported: no edge back up to it.
                if dep in modules and dep != name and not name.startswith(dep + "."):
                    edges.add(dep)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None when the graph is a DAG.

    >>> find_cycle({"a": {"b"}, "b": {"a"}})
    ['a', 'b', 'a']
    >>> find_cycle({"a": {"b"}, "b": set()}) is None
    True
    """
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        todo: list[list[str]] = [sorted(graph[start])]
        while todo:
            if not todo[-1]:
                todo.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            nxt = todo[-1].pop(0)
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt in done:
                continue
            path.append(nxt)
            on_path.add(nxt)
            todo.append(sorted(graph.get(nxt, ())))
    return None


def test_the_graph_sees_function_level_and_relative_imports() -> None:
    tree = ast.parse("def f():\n    from streamsrv.config import loader\nfrom . import model\n")
    names = _imported_names("streamsrv.events.factory", False, tree)
    assert {"streamsrv.config.loader", "streamsrv.events.model"} <= names


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "streamsrv.config.models" in graph["streamsrv.config.loader"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
