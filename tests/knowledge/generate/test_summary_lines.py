"""Build/derive summaries as one readable log line, never a raw dict (issue 14: benchmark logs)."""
from __future__ import annotations

from kemm.knowledge.generate.build import BuildSummary
from kemm.knowledge.generate.derive import DeriveSummary


def test_build_summary_line():
    s = BuildSummary("src", total=412, ok=410, failed=1, skipped=1, cached=400, generated=12, elapsed_s=3.14,
                     failures=["TCGA-AA-0001: invalid grade"])
    line = s.line()
    assert line == ("412 inputs: 410 ok, 1 failed, 1 skipped; 400 cached, 12 generated in 3.1 s; "
                    "first failure: TCGA-AA-0001: invalid grade")
    assert "{" not in line and "'" not in line


def test_derive_summary_line():
    s = DeriveSummary("f", total=411, ok=398, skipped=13, cached=0, written=398,
                      skip_reasons={"no field of the refined report is reported": 13})
    assert s.line() == ("411 cases: 398 ok, 13 skipped (13 no field of the refined report is reported); "
                        "0 cached, 398 written")
    assert DeriveSummary("g", total=2, ok=2, written=2).line() == "2 cases: 2 ok, 0 skipped; 0 cached, 2 written"
