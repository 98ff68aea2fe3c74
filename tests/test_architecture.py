"""The layering of ``src/persona_space``: no import cycles between files, no reach into another package's privates.

Every import statement counts, also those inside functions and under
``TYPE_CHECKING``: a cycle hidden in a function body is still a cycle in the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "persona_space"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` imports (``from a import b`` counts ``a.b`` where that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                full = f"{module}.{alias.name}"
                found.add(full if full in modules else module)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _private_owner(target: str) -> str | None:
    """The package owning the first private part of ``target`` (``a.b._c`` -> ``a.b``), if any."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and part != "__init__":
            return ".".join(parts[:i])
    return None


def test_no_module_imports_another_packages_private_module() -> None:
    bad = []
    for name, targets in _graph().items():
        for target in targets:
            owner = _private_owner(target)
            if owner and owner != "persona_space" and name != owner and not name.startswith(owner + "."):
                bad.append(f"{name} -> {target}")
    assert bad == [], "use the owning package's public names instead: " + "; ".join(sorted(bad))


def test_no_import_cycles() -> None:
    graph = _graph()
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for target in sorted(graph[node]):
            if seen.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in seen:
                visit(target, [*path, target])
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node, [node])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_what_they_should() -> None:
    """The graph is not empty and knows the layering: operations use the engine, never the reverse."""
    graph = _graph()
    assert "persona_space.engine" in graph["persona_space.sampling._api"]
    assert "persona_space.engine._adapters" in graph["persona_space.engine"]
    assert not any(
        t.startswith(("persona_space.sampling", "persona_space.logprobs")) for t in graph["persona_space.engine._cpu"]
    )
    assert _private_owner("persona_space.sampling._api") == "persona_space.sampling"
    assert _private_owner("persona_space.engine") is None
