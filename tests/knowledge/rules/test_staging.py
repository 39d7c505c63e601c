"""The one staging vocabulary: code numbers, and the schema identities built from it."""
from __future__ import annotations

import pytest

from kemm.knowledge.generate.schemas import PrognosticKnowledge, RefinedReport, schema_sha
from kemm.knowledge.rules.staging import canon_tnm, grade_number, roman_or_int, stage_number, tnm_number


def test_schema_identity_unchanged_by_the_move():
    # schema_sha is part of every cache identity: these values were computed at af49b2a, before the
    # vocabulary moved to rules/staging.py; a change would refuse every existing source.
    assert schema_sha(RefinedReport) == "2811539944ab7c1a57a6e642bda68c876ed34eb1f25b96de6bfe76ff7abfafde"
    assert schema_sha(PrognosticKnowledge) == "204dd372b88a41524ef596cdb3b76329f84699b889f5153b23f0d6ca423f8fc0"


@pytest.mark.parametrize("code, want", [("IIIA", 3), ("IV", 4), ("0is", 0), ("I", 1), ("not reported", None)])
def test_stage_number(code, want):
    assert stage_number(code) == want


@pytest.mark.parametrize("code, letter, want", [("T2a", "T", 2), ("Tis", "T", 0), ("Ta", "T", 0), ("TX", "T", None),
                                                ("N1", "N", 1), ("M1c", "M", 1), ("not reported", "N", None)])
def test_tnm_number(code, letter, want):
    assert tnm_number(code, letter) == want


def test_grades_numerals_and_canonical_codes():
    assert [grade_number(g) for g in ("G1", "G4", "low grade", "high grade", "not reported")] == [1.0, 4.0, 1.0, 3.0, None]
    assert [roman_or_int(t) for t in ("iii", "IV", "2")] == [3, 4, 2]
    assert [canon_tnm(*x) for x in (("t", "2A"), ("m", "x"), ("T", "is"), ("t", "a"))] == ["T2a", "MX", "Tis", "Ta"]
