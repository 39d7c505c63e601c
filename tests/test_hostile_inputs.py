"""Hostile inputs and silent-wrong-result cases of issue 12: each one a clear error, never a wrong number."""
from __future__ import annotations

import json

import pytest

from fakes import IDENTITY, VALID_REPORT, HashEncoder
from kemm.knowledge.embed.embed import embed_source
from kemm.knowledge.embed.store import read_embeddings
from kemm.knowledge.errors import EmbeddingError
from kemm.knowledge.generate.schemas import RefinedReport
from kemm.knowledge.records import CacheRecord
from kemm.knowledge.store.cache import SourceCache, record_key, sha256_text


def _report(i: int, tag: str = "") -> dict:
    d = dict(VALID_REPORT)
    d["key_statements"] = [f"Case {i}{tag}: high grade carcinoma.", f"Case {i}{tag}: {i} of 12 nodes positive."]
    d["summary"] = f"Summary of case {i}{tag}."
    return RefinedReport.model_validate(d).model_dump(mode="json")


def _append(cache_dir, source: str, outputs: dict[str, dict | None]) -> SourceCache:
    """Append one record per case (a later record of a case replaces the earlier one, as a rebuild does)."""
    sc = SourceCache(cache_dir, source)
    sc.ensure_identity(IDENTITY)
    with sc.writer() as w:
        for cid, out in outputs.items():
            text = f"report of {cid} {json.dumps(out, sort_keys=True)}"
            w.append(CacheRecord(key=record_key(IDENTITY, text), case_id=cid, status="ok" if out else "failed",
                                 input_sha=sha256_text(text), output=out, raw_output="", errors=[] if out else ["bad"],
                                 attempts=1, finish_reason="stop"))
    return sc


# -- item 2: stale embeddings ------------------------------------------------------------------
def test_stale_embeddings_refused_after_rebuild_and_embed_updates_only_the_change(tmp_path):
    _append(tmp_path, "src", {f"C{i}": _report(i) for i in range(3)})
    enc = HashEncoder()
    embed_source(tmp_path, "src", enc, progress=False)
    assert set(read_embeddings(tmp_path, "src").by_case) == {"C0", "C1", "C2"}
    _append(tmp_path, "src", {"C1": _report(1, "b")})  # a rebuild changed one case's record, no embed yet
    with pytest.raises(EmbeddingError, match=r"'src'.*kemm-knowledge embed src"):
        read_embeddings(tmp_path, "src")
    enc2 = HashEncoder()
    s = embed_source(tmp_path, "src", enc2, progress=False)
    assert s.n_encoded == 3 and s.n_reused == 6  # only C1's three statements
    e = read_embeddings(tmp_path, "src")
    assert e.statements["C1"][0].startswith("Case 1b")


def test_embeddings_of_a_record_that_now_failed_are_refused(tmp_path):
    _append(tmp_path, "src", {f"C{i}": _report(i) for i in range(2)})
    embed_source(tmp_path, "src", HashEncoder(), progress=False)
    _append(tmp_path, "src", {"C0": None})  # the rebuild of C0 failed: it has no knowledge now
    with pytest.raises(EmbeddingError, match="kemm-knowledge embed src"):
        read_embeddings(tmp_path, "src")
