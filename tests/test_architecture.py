"""The shape of the code: imports follow the flow, modules and functions stay readable.

A module may import only those before it in FLOW (a package counts as one place, its
modules may import each other without a cycle). A new module needs a place in FLOW:
deciding where it sits in the flow is the point.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).parent.parent / "service"

# Earlier entries never import later ones.
FLOW = [
    "errors",
    "clock",
    "processes",
    "text",
    "slugs",
    "metrics",
    "config",
    "templating",
    "store",
    "migrations",
    "places",
    "ingest",
    "sources",
    "feeds",
    "consent",
    "mailer",
    "subscribers",
    "operators",
    "outcomes",
    "confirmations",
    "digest",
    "deliveries",
    "scheduler",
    "runtime",
    "web",
    "cli",
]
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(p for p in SERVICE.rglob("*.py") if "versions" not in p.parts)


def _dotted(path: Path) -> str:
    parts = path.relative_to(SERVICE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The service modules a file imports, as dotted names (`service.store.base`)."""
    found: set[str] = set()
    here = _dotted(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("service"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if not module.startswith("service"):
                continue
            found.add(module)
            # `from service import store` imports the module service.store.
            found.update(f"{module}.{a.name}" for a in node.names)
    return {name for name in found if _known(name)}


def _known(dotted: str) -> bool:
    parts = dotted.split(".")[1:]
    if not parts:
        return False
    path = SERVICE.joinpath(*parts)
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _place(dotted: str) -> str:
    return dotted.split(".")[1] if dotted.count(".") else ""


def test_every_module_has_a_place_in_the_flow() -> None:
    places = {_place(_dotted(p)) for p in _modules()} - {""}
    assert places - set(FLOW) == set()


def test_no_module_imports_one_later_in_the_flow() -> None:
    backwards = []
    for path in _modules():
        here = _place(_dotted(path))
        if not here:
            continue
        for imported in _imports(path):
            there = _place(imported)
            if there and there != here and FLOW.index(there) > FLOW.index(here):
                backwards.append(f"{_dotted(path)} imports {imported}")
    assert backwards == []


def test_modules_of_a_package_import_each_other_without_a_cycle() -> None:
    graph = {_dotted(p): _imports(p) for p in _modules()}
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for nxt in graph.get(name, set()):
            # A package's __init__ re-exports its modules: importing it is not a cycle.
            if nxt == name or name.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail, name, nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, name])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [])
    assert cycles == []


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SERVICE)))
def test_module_is_short_enough_to_read(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES


def test_no_function_is_longer_than_a_screen() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SERVICE)}:{node.lineno} {node.name} ({length})")
    assert long == []
