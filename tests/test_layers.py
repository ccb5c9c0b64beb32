"""The import graph stays one-way (README, "Architecture"): a newcomer can rely on the layers.

Read from the source with ``ast`` (nothing is imported), so a new import that breaks a layer
fails here, not months later as a cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("raregraph", "deploy", "client", "server", "kg", "shared")
#: what each top-level package may import besides itself
ALLOWED = {
    "raregraph": {"deploy", "client", "server", "kg", "shared"},
    "deploy": {"client", "server", "kg", "shared"},
    "client": {"shared"},
    "server": {"shared"},
    "kg": {"shared"},
    "shared": set(),
}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every project module → the project modules it imports (at any depth in the file)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            module = _module(path)
            graph[module]
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                         else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                graph[module].update(n for n in names if n.split(".")[0] in PACKAGES)
    return graph


GRAPH = _imports()


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``edges`` as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def _is_cli(module: str) -> bool:
    return module.split(".")[-1] == "cli" or module.startswith("raregraph")


@pytest.mark.parametrize("package", PACKAGES)
def test_top_level_packages_import_only_the_layers_below(package: str) -> None:
    wrong = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() if m.split(".")[0] == package
                   for t in targets if t.split(".")[0] not in ALLOWED[package] | {package})
    assert not wrong, "\n".join(wrong)


def test_no_library_module_imports_a_command() -> None:
    """Commands (``cli`` modules, ``raregraph``) are the edge: nothing below them imports one."""
    wrong = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() if not _is_cli(m)
                   for t in targets if _is_cli(t) and t != m)
    assert not wrong, "\n".join(wrong)


def test_no_module_import_cycle() -> None:
    edges = {m: {t for t in targets if t in GRAPH} for m, targets in GRAPH.items()}
    assert _cycle(edges) is None


def test_shared_subpackages_form_layers() -> None:
    """Inside ``shared/``, the folders (model, privacy, ehr, …) import each other one way only,
    commands left out."""
    def folder(module: str) -> str:
        return ".".join(module.split(".")[:2])

    edges: dict[str, set[str]] = defaultdict(set)
    for m, targets in GRAPH.items():
        if m.startswith("shared.") and not _is_cli(m):
            edges[folder(m)].update(folder(t) for t in targets
                                    if t.startswith("shared.") and folder(t) != folder(m))
    assert _cycle(edges) is None, f"shared/ folders import each other in a cycle: {_cycle(edges)}"


def test_the_checker_sees_a_cycle() -> None:
    """The cycle finder itself, on a known graph."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
