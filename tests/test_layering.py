"""Training and evaluation stand side by side: neither imports the other (read from the source).

Every import statement counts, also one inside a function, so a lazy import cannot hide a
dependency. The run folder's I/O (``oat.checkpoint``, ``oat.rundir``) is shared below both, and
:mod:`oat.pipeline` alone runs them in sequence.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "oat"


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The oat modules a source file imports (``from oat.x import y`` counts oat.x and oat.x.y)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also module-level try/if blocks
        nodes = [n for top in tree.body for n in ast.walk(top) if not isinstance(top, (ast.FunctionDef, ast.ClassDef))]
    out = set()
    pkg = _module(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")
                base = ".".join(up[: len(up) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m == "oat" or m.startswith("oat.")}


def _files(sub: str) -> list[Path]:
    return sorted((SRC / sub).rglob("*.py"))


@pytest.mark.parametrize("sub, other", [("train", "oat.evaluate"), ("evaluate", "oat.train")])
def test_train_and_evaluate_do_not_import_each_other(sub, other):
    bad = {f"{_module(f)} imports {m}" for f in _files(sub) for m in _imports(f)
           if m == other or m.startswith(other + ".")}
    assert not bad, "; ".join(sorted(bad))


def test_shared_run_folder_modules_import_neither():
    for name in ("checkpoint", "rundir", "state_schema", "runlock"):
        found = _imports(SRC / f"{name}.py")
        assert not {m for m in found if m.startswith(("oat.train", "oat.evaluate"))}, (name, found)


def test_no_import_cycle_between_modules():
    """Module-level imports among oat's modules form no cycle (lazy imports in functions excepted)."""
    modules = {_module(f): f for f in SRC.rglob("*.py")}
    graph = {}
    for name, f in modules.items():
        deps = {m for m in _imports(f, top_level_only=True) if m in modules and m != name}
        # A submodule importing its own package's __init__ (or a parent's) is how packages work.
        graph[name] = {m for m in deps if not name.startswith(m + ".")}
    state: dict[str, int] = {}

    def visit(n, path):
        state[n] = 1
        for m in graph[n]:
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
            if m not in state:
                visit(m, path + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


def test_the_pipeline_runs_training_then_evaluation():
    found = _imports(SRC / "pipeline.py")
    assert "oat.train.runner" in found and "oat.evaluate.api" in found
