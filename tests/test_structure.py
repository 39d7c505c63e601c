"""The house rules of the model half and the top level, checked on the source (AST).

- no function-level import except optional heavy dependencies (``ALLOWED_LAZY``), each with
  a ``# lazy:`` comment saying why;
- no module over 500 lines, no function over 80 lines;
- no import cycle between kemm.model / top-level modules (runtime imports);
- the knowledge half only through ``kemm.knowledge`` (never ``kemm.knowledge.<submodule>``);
- no ``pickle.load`` outside ``run/upgrade.py``;
- ``import kemm.model`` and every name of its public API load no knowledge submodule.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "kemm"
FILES = sorted([*(PKG / "model").rglob("*.py"), PKG / "cli.py", PKG / "pipelines.py", PKG / "compare.py", PKG / "_lazy.py",
                *(PKG / "benchmark").rglob("*.py"), PKG / "_io.py", PKG / "_ray.py"])
ALLOWED_LAZY = {"lifelines", "sksurv", "vllm", "ray", "transformers", "sentence_transformers"}


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    # `from kemm.model.nn import kecm` imports a module: count kemm.model.nn.kecm too
    return [base] + [f"{base}.{a.name}" for a in node.names]


def test_files_found() -> None:
    assert len(FILES) > 25 and PKG / "model" / "run" / "rundir.py" in FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_level_import_except_lazy_heavy_deps(path: Path) -> None:
    lines = path.read_text().splitlines()
    bad = []
    for fn in _functions(_tree(path)):
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                roots = {n.split(".")[0] for n in _imported(node) if n}
                ok = roots <= ALLOWED_LAZY and "# lazy:" in lines[node.lineno - 1]
                if not ok:
                    bad.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert not bad, bad


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_function_sizes(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= 500, f"{path}: {n} lines"
    long = [f"{f.name} ({f.end_lineno - f.lineno + 1} lines)" for f in _functions(_tree(path))
            if f.end_lineno - f.lineno + 1 > 80]
    assert not long, f"{path}: {long}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_knowledge_only_through_public_api(path: Path) -> None:
    bad = [f"{path.name}:{node.lineno} {ast.unparse(node)}" for node in ast.walk(_tree(path))
           if isinstance(node, (ast.Import, ast.ImportFrom))
           and any(n.startswith("kemm.knowledge.") for n in _imported(node)[:1] + (
               [a.name for a in node.names] if isinstance(node, ast.Import) else []))]
    assert not bad, bad


def _graph() -> dict[str, set[str]]:
    mods = {_module(p): p for p in FILES}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(_tree(p)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[m] |= {n for n in _imported(node) if n in mods and n != m}
    return graph


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d] if d in stack else [m, d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_dependency_directions() -> None:
    graph = _graph()
    assert "kemm.model.run.train" not in graph["kemm.model.run.evaluate"]
    assert "kemm.model.run.train" not in graph["kemm.model.run.predict"]
    for m, deps in graph.items():
        if m.startswith("kemm.model"):
            assert not {"kemm.cli", "kemm.pipelines", "kemm.benchmark"} & deps, m


def test_pickle_loaded_only_by_run_upgrade() -> None:
    hits = []
    for p in PKG.rglob("*.py"):
        for node in ast.walk(_tree(p)):
            if isinstance(node, ast.Attribute) and node.attr in {"load", "loads", "Unpickler"} \
                    and isinstance(node.value, ast.Name) and node.value.id in {"pickle", "cPickle", "dill", "joblib"}:
                hits.append(str(p.relative_to(ROOT)))
    assert set(hits) <= {"kemm/model/run/upgrade.py"}, hits


def test_import_kemm_model_loads_no_knowledge_submodule() -> None:
    code = (
        "import sys, kemm.model as m\n"
        "[getattr(m, n) for n in m.__all__]\n"
        "print(sorted(x for x in sys.modules if x.startswith('kemm.knowledge.')))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout


def test_every_referenced_test_file_exists() -> None:
    """CI scripts, docs and comments name test files by path; a move must update them all."""
    pattern = re.compile(r"\btests/[A-Za-z0-9_/]+\.py\b")
    roots = [ROOT / "kemm", ROOT / "experiments", ROOT / ".ci", ROOT / "README.md", ROOT / "Makefile", ROOT / "tests"]
    missing = []
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            if path.suffix not in {".py", ".md", ".sh", ".yaml", ".yml", ".toml", ""} or "__pycache__" in path.parts:
                continue
            for ref in pattern.findall(path.read_text(errors="replace")):
                if not (ROOT / ref).exists():
                    missing.append(f"{path.relative_to(ROOT)}: {ref}")
    assert not missing, "referenced test files that do not exist:\n" + "\n".join(missing)
