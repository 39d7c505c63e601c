from __future__ import annotations

import pytest
from pydantic import ValidationError

from fakes import VALID_REPORT
from kemm.knowledge import FIELD_KINDS, FIELD_SENTENCES_VERSION, field_sentences, kind_field
from kemm.knowledge.generate.schemas import NOT_REPORTED, RefinedReport

NR = NOT_REPORTED
FULL = dict(VALID_REPORT, pT="T3b", pN="N1", pM="M0", stage_group="IIIA", grade="G3", tumor_size="6 cm",
            nodes_positive=3, nodes_examined=12, margin_status="positive", lymphovascular_invasion="present",
            perineural_invasion="absent")
EMPTY = {k: NR for k in FULL if k not in ("key_statements", "summary")} | {"key_statements": [], "summary": "Nothing found."}


def _sentences(report) -> dict[str, str]:
    """Field -> sentence (kinds carry the value category since fields-v2)."""
    return {kind_field(k): s for k, s in field_sentences(report)}


def test_full_report_one_sentence_per_field_in_order():
    pairs = field_sentences(FULL)
    assert [kind_field(k) for k, _ in pairs] == list(FIELD_KINDS)
    assert [k for k, _ in pairs] == ["histologic_type", "grade:G3", "pT:3", "pN:1", "pM:0", "stage_group:3",
                                     "tumor_size:gt5cm", "nodes:1-3", "margin_status:positive",
                                     "lymphovascular_invasion:present", "perineural_invasion:absent"]
    s = _sentences(FULL)
    assert s["pT"].startswith("Primary tumour category pT3b:") and "locally advanced" in s["pT"]
    assert s["pN"].startswith("Regional lymph node metastasis present (pN1)")
    assert s["pM"] == "No distant metastasis (pM0)."
    assert s["stage_group"] == "Pathologic stage IIIA: regional spread, advanced disease with poorer prognosis."
    assert "poorly differentiated" in s["grade"] and "aggressive" in s["grade"]
    assert s["nodes"] == "3 of 12 examined lymph nodes contain metastasis (node-positive)."
    assert "6 cm" in s["tumor_size"] and "over 5 cm" in s["tumor_size"]
    assert s["margin_status"].startswith("Surgical margin positive")
    assert s["lymphovascular_invasion"].startswith("Lymphovascular invasion present")
    assert s["perineural_invasion"] == "No perineural invasion (absent)."
    assert s["histologic_type"] == "Histologic type: urothelial carcinoma."
    assert FIELD_SENTENCES_VERSION == "fields-v2"
    # a model instance gives the same sentences as its dict
    assert field_sentences(RefinedReport.model_validate(FULL)) == pairs


def test_all_not_reported_gives_nothing():
    assert field_sentences(EMPTY) == []


@pytest.mark.parametrize("value,expected", [("T0", "no evidence"), ("Tis", "in situ"), ("Ta", "non-invasive papillary"),
                                            ("T1", "early"), ("T2", "intermediate"), ("T4a", "adjacent organs"),
                                            ("TX", "cannot be assessed")])
def test_pt_categories(value, expected):
    assert expected in _sentences(dict(EMPTY, pT=value))["pT"]


def test_pn0_nodes_and_generic_histology():
    assert _sentences(dict(EMPTY, pN="N0"))["pN"] == "No regional lymph node metastasis (pN0)."
    assert _sentences(dict(EMPTY, nodes_positive=0, nodes_examined=12))["nodes"].startswith("None of 12")
    assert _sentences(dict(EMPTY, nodes_positive=1, nodes_examined=5))["nodes"] == \
        "1 of 5 examined lymph nodes contains metastasis (node-positive)."
    assert "not reported" in _sentences(dict(EMPTY, nodes_examined=7))["nodes"]
    for generic in ("bladder", "carcinoma", "Malignant neoplasm"):  # site restatements say nothing about the tumour
        assert field_sentences(dict(EMPTY, histologic_type=generic)) == []
    assert _sentences(dict(EMPTY, stage_group="IV"))["stage_group"].startswith("Pathologic stage IV:")
    assert "stage IV" in _sentences(dict(EMPTY, pM="M1"))["pM"]
    assert "low-grade" in _sentences(dict(EMPTY, grade="G1"))["grade"]


def test_every_kind_reachable_and_invalid_report_refused():
    reached = {kind_field(k) for v in (FULL, dict(EMPTY, nodes_examined=3)) for k, _ in field_sentences(v)}
    assert reached == set(FIELD_KINDS)
    with pytest.raises(ValidationError, match="pT"):
        field_sentences(dict(FULL, pT="stage 3"))


@pytest.mark.parametrize("change,kind", [
    ({"pT": "Tis"}, "pT:is"), ({"pT": "TX"}, "pT:X"), ({"pN": "N0"}, "pN:0"), ({"pN": "NX"}, "pN:X"),
    ({"pM": "M1"}, "pM:1"), ({"stage_group": "IVB"}, "stage_group:4"), ({"grade": "high grade"}, "grade:high"),
    ({"tumor_size": "1.5 cm"}, "tumor_size:lt2cm"), ({"tumor_size": "30 mm"}, "tumor_size:2-5cm"),
    ({"nodes_positive": 0, "nodes_examined": 9}, "nodes:0"), ({"nodes_positive": 7}, "nodes:4+"),
    ({"nodes_examined": 7}, "nodes:unknown"), ({"margin_status": "close"}, "margin_status:close"),
])
def test_kinds_carry_the_value_category(change, kind):
    kinds = [k for k, _ in field_sentences(dict(EMPTY, **change))]
    assert kinds == [kind]
    assert kind_field(kind) in FIELD_KINDS and kind_field("pbk:stage:unfavourable") == "pbk:stage:unfavourable"


def test_a_long_free_text_histology_still_fits_a_statement():
    """A 300-character histologic type (an LLM's) made a 318-character sentence that FieldStatements refused."""
    from kemm.knowledge.generate.schemas import FieldStatements

    rep = dict(VALID_REPORT, histologic_type="urothelial carcinoma " + "with squamous differentiation " * 10)
    rep["histologic_type"] = rep["histologic_type"][:300]
    pairs = field_sentences(rep)
    hist = dict(pairs)["histologic_type"]
    assert len(hist) <= 300 and hist.startswith("Histologic type: urothelial carcinoma") and hist.endswith("….")
    FieldStatements.model_validate({"items": [{"kind": k, "text": t} for k, t in pairs]})
