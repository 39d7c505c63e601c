"""Help text and --version of `kemm` and `kemm-knowledge` (issue 14, item 6)."""
from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from kemm import __version__
from kemm.cli import app as kemm_app
from kemm.knowledge.cli import app as knowledge_app


def _command_paths(app: typer.Typer) -> list[list[str]]:
    """Every command path of an app, e.g. [[], ["train"], ["run", "upgrade"]]."""
    def walk(cmd, path: list[str]) -> list[list[str]]:
        out = [path]
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click classes)
            for name, sub in cmd.commands.items():
                out += walk(sub, [*path, name])
        return out
    return walk(typer.main.get_command(app), [])


CASES = [(a, p) for a in (kemm_app, knowledge_app) for p in _command_paths(a)]
assert len(CASES) > 15, CASES


@pytest.mark.parametrize("app,path", CASES, ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_help_has_no_bool_placeholder_or_stray_dot(app, path):
    r = CliRunner().invoke(app, [*path, "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.output
    assert not re.search(r"\s\.(\s|$)", r.output), r.output  # "[...]" eaten as markup left a lone " ."
    assert max(len(line) for line in r.output.splitlines()) <= 80


def test_help_keeps_bracketed_defaults():
    r = CliRunner().invoke(knowledge_app, ["ls", "--help"], terminal_width=80)
    assert "KEMM_CACHE_DIR" in r.output and "./knowledge_cache" in r.output


@pytest.mark.parametrize("app,name", [(kemm_app, "kemm"), (knowledge_app, "kemm-knowledge")])
def test_version(app, name):
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith(name) and __version__ in r.output
