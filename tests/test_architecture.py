"""The package's shape: an import graph without cycles, `config` a leaf, no import hidden in a function to
dodge a cycle, and only the owners of a run directory's files writing them."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "resnet_jax"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, ast.AST, bool]]:
    """(imported resnet_jax module, node, at module level) for every import in `path`."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from package import module` depends on that module; `from module import name` on the module
            names = [
                f"{node.module}.{a.name}" if _is_module(f"{node.module}.{a.name}") else node.module
                for a in node.names
            ]
        modules = {name for name in names if name.split(".")[0] == "resnet_jax" and _is_module(name)}
        modules.discard(module_name(path))
        found += [(name, node, id(node) in top) for name in sorted(modules)]
    return found


def _is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): {name for name, _, _ in imports(p)} for p in PACKAGE.rglob("*.py")}


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert len(edges) > 20 and cycles == []


def test_no_import_of_the_package_is_hidden_inside_a_function() -> None:
    hidden = [
        f"{p.relative_to(REPO)}:{node.lineno} {name}"
        for p in PACKAGE.rglob("*.py")
        for name, node, top in imports(p)
        if not top
    ]
    assert hidden == []


def test_config_is_a_leaf() -> None:
    assert graph()["resnet_jax.config"] == set()
