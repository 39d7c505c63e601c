from __future__ import annotations

from kemm.knowledge.rules import report_sentences as rs
from kemm.knowledge.rules.report_sentences import MAX_CHARS, MAX_SENTENCES, REPORT_SENTENCES_VERSION, report_sentences

REPORT = """SURGICAL PATHOLOGY REPORT
GROSS DESCRIPTION:
Received in formalin is a bladder measuring 10 x 8 cm.
A1-A5 tumor
FINAL DIAGNOSIS:
URINARY BLADDER, RADICAL CYSTECTOMY:
- INVASIVE HIGH GRADE UROTHELIAL CARCINOMA, INVADING
PERIVESICAL FAT (pT3a).
- LYMPHOVASCULAR INVASION PRESENT.
- LYMPHOVASCULAR INVASION PRESENT.
- Nine lymph nodes negative for carcinoma (0/9). Margins free.
Histologic Grade:
High grade
Perineural Invasion: Not identified
"""


def test_sentences_of_the_diagnosis_in_order():
    s = report_sentences(REPORT)
    assert REPORT_SENTENCES_VERSION == "report-sentences-v1" and rs.SENTENCES_SECTIONING == "sections-v2"
    # a line ending in ':' takes the next; an OCR line break inside a sentence is joined; the
    # list marker is dropped
    assert s[0] == ("FINAL DIAGNOSIS: URINARY BLADDER, RADICAL CYSTECTOMY: INVASIVE HIGH GRADE UROTHELIAL "
                    "CARCINOMA, INVADING PERIVESICAL FAT (pT3a).")
    # a repeated line is kept once
    assert sum("LYMPHOVASCULAR INVASION PRESENT." in x for x in s) == 1
    assert s[1] == "LYMPHOVASCULAR INVASION PRESENT. Nine lymph nodes negative for carcinoma (0/9)."  # short: joined
    # a synoptic label ending in ':' takes its value from the next line; a label line starts a new sentence
    assert any(x.endswith("Histologic Grade: High grade") for x in s)
    assert s[-1] == "Perineural Invasion: Not identified"
    # the gross description is not diagnostic text
    assert not any("formalin" in x for x in s)


def test_limits_and_empty_input():
    assert report_sentences("") == [] and report_sentences(None) == []  # type: ignore[arg-type]
    many = "DIAGNOSIS:\n" + "\n".join(f"- Finding number {i} is described at some length here." for i in range(80))
    s = report_sentences(many)
    assert len(s) == MAX_SENTENCES and s[0].startswith("DIAGNOSIS: Finding number 0")
    long = "DIAGNOSIS:\n- " + " ".join(["carcinoma"] * 100)
    assert all(len(x) <= MAX_CHARS for x in report_sentences(long))


def test_short_pieces_are_joined_to_the_next():
    s = report_sentences("DIAGNOSIS: see below.\nG3.\nTumour invades the muscularis propria deeply.\n")
    assert s == ["DIAGNOSIS: see below. G3. Tumour invades the muscularis propria deeply."]
