"""`kemm-knowledge ls` in an 80-column terminal: full source names, a readable prompt column (issue 14)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fakes import IDENTITY, VALID_REPORT
from kemm.knowledge.cli.inspect import prompt_label
from kemm.knowledge.generate.schemas import RefinedReport
from kemm.knowledge.records import CacheRecord
from kemm.knowledge.store.cache import SourceCache, record_key

LONG = "tcga-blca-rules-fields-with-a-rather-long-name"
IMPORTED = "tcga-blca-llm-imported-as-published"


def _source(cache_dir: Path, name: str, **ident) -> None:
    identity = dict(IDENTITY, model_id="/models/some/checkpoint/folder/Qwen2.5-7B-Instruct", **ident)
    sc = SourceCache(cache_dir, name)
    sc.ensure_identity(identity)
    with sc.writer() as w:
        w.append(CacheRecord(key=record_key(identity, "TCGA-AA-0001"), case_id="TCGA-AA-0001", status="ok",
                             output=RefinedReport.model_validate(VALID_REPORT).model_dump(mode="json"),
                             attempts=1, finish_reason="stop"))


def test_prompt_label():
    assert prompt_label({"prompt_version": 1, "prompt_sha": "b2c99957abcdef"}) == "v1 b2c99957"
    assert prompt_label({"prompt_version": None, "prompt_sha": "import:tcga-path-report"}) == "imported (tcga-path-report)"
    assert prompt_label({"prompt_version": "fields-v1", "prompt_sha": "cf37b543ff"}) == "fields-v1 cf37b543"


def _ls(cache_dir: Path, columns: int) -> str:
    env = dict(os.environ, COLUMNS=str(columns), PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    r = subprocess.run([sys.executable, "-c", "from kemm.knowledge.cli import app; app()", "ls", "--cache-dir",
                        str(cache_dir)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_ls_80_columns_shows_full_names(tmp_path):
    cache = tmp_path / "a-cache-folder-with-a-long-path" / "knowledge_cache"
    _source(cache, LONG, prompt_sha="b2c99957abcdef")
    _source(cache, IMPORTED, prompt_version=None, prompt_sha="import:tcga-path-report")
    text = _ls(cache, 80)
    lines = text.splitlines()
    assert LONG in lines and IMPORTED in lines  # a name is a whole line, never cut or wrapped
    assert str(cache) in text  # the path in one piece
    assert "…" not in text and "vNone" not in text
    assert "imported (tcga-path-report)" in text and "v1 b2c99957" in text
    wide = _ls(cache, 250)
    assert "┃ source" in wide and LONG in wide and "imported (tcga-path-report)" in wide
