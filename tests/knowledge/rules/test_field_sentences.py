from __future__ import annotations

import pytest
from pydantic import ValidationError

from fakes import VALID_REPORT
from kemm.knowledge import FIELD_KINDS, FIELD_SENTENCES_VERSION, field_sentences
from kemm.knowledge.generate.schemas import NOT_REPORTED, RefinedReport

NR = NOT_REPORTED
FULL = dict(VALID_REPORT, pT="T3b", pN="N1", pM="M0", stage_group="IIIA", grade="G3", tumor_size="6 cm",
            nodes_positive=3, nodes_examined=12, margin_status="positive", lymphovascular_invasion="present",
            perineural_invasion="absent")
EMPTY = {k: NR for k in FULL if k not in ("key_statements", "summary")} | {"key_statements": [], "summary": "Nothing found."}


def test_full_report_one_sentence_per_field_in_order():
    pairs = field_sentences(FULL)
    assert [k for k, _ in pairs] == list(FIELD_KINDS)
    s = dict(pairs)
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
    assert FIELD_SENTENCES_VERSION == "fields-v1"
    # a model instance gives the same sentences as its dict
    assert field_sentences(RefinedReport.model_validate(FULL)) == pairs


def test_all_not_reported_gives_nothing():
    assert field_sentences(EMPTY) == []


@pytest.mark.parametrize("value,expected", [("T0", "no evidence"), ("Tis", "in situ"), ("Ta", "non-invasive papillary"),
                                            ("T1", "early"), ("T2", "intermediate"), ("T4a", "adjacent organs"),
                                            ("TX", "cannot be assessed")])
def test_pt_categories(value, expected):
    assert expected in dict(field_sentences(dict(EMPTY, pT=value)))["pT"]


def test_pn0_nodes_and_generic_histology():
    assert dict(field_sentences(dict(EMPTY, pN="N0")))["pN"] == "No regional lymph node metastasis (pN0)."
    assert dict(field_sentences(dict(EMPTY, nodes_positive=0, nodes_examined=12)))["nodes"].startswith("None of 12")
    assert dict(field_sentences(dict(EMPTY, nodes_positive=1, nodes_examined=5)))["nodes"] == \
        "1 of 5 examined lymph nodes contains metastasis (node-positive)."
    assert "not reported" in dict(field_sentences(dict(EMPTY, nodes_examined=7)))["nodes"]
    for generic in ("bladder", "carcinoma", "Malignant neoplasm"):  # site restatements say nothing about the tumour
        assert field_sentences(dict(EMPTY, histologic_type=generic)) == []
    assert dict(field_sentences(dict(EMPTY, stage_group="IV")))["stage_group"].startswith("Pathologic stage IV:")
    assert "stage IV" in dict(field_sentences(dict(EMPTY, pM="M1")))["pM"]
    assert "low-grade" in dict(field_sentences(dict(EMPTY, grade="G1")))["grade"]


def test_every_kind_reachable_and_invalid_report_refused():
    reached = {k for v in (FULL, dict(EMPTY, nodes_examined=3)) for k, _ in field_sentences(v)}
    assert reached == set(FIELD_KINDS)
    with pytest.raises(ValidationError, match="pT"):
        field_sentences(dict(FULL, pT="stage 3"))
