"""The package's shape: its modules import each other one way only (no circle, lazy imports counted),
and nothing in it needs the checkout's bench/ or tests/ (an installed package has neither)."""

import ast
from pathlib import Path

import pytest

import triton_conv

PACKAGE = Path(triton_conv.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module this file imports, at the top or inside a function, as absolute names."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from . import x`
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_import_circle_between_modules():
    graph = _graph()
    # A package's __init__ re-exports its modules; a module importing its own package's __init__
    # is not a circle of the code, so edges into a package's __init__ from inside it are dropped.
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph))}"


def test_the_circle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_in_the_package_loads_bench_or_tests():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for module in _imports(path):
            assert module.split(".")[0] not in ("bench", "tests"), f"{path.name} imports {module}"
        assert '"bench"' not in text and "'bench'" not in text or path.name == "benchmarking.py", (
            f"{path.name} reaches into bench/ by path"
        )


def test_the_licence_ships_in_a_form_every_setuptools_builds():
    """The build must work with setuptools 64 (pyproject's floor; an install without build isolation
    uses whatever a machine has) and the newest (which drops the `license` table on 2027-02-18):
    the licence is a LICENSE file, which both find by themselves, not a `license` key."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert "license" not in project
    assert "MIT License" in (root / "LICENSE").read_text()
