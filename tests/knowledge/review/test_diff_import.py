"""diff (agreement, Cohen's kappa) and import (tcga-path-report, jsonl)."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import SHARED_DATA
from fakes import IDENTITY, VALID_REPORT
from kemm.knowledge.records import CacheRecord
from kemm.knowledge.review.audit import audit_source
from kemm.knowledge.store.cache import SourceCache, record_key
from kemm.knowledge.cli import app
from kemm.knowledge.review.diff import cohen_kappa, diff_outputs, diff_sources
from kemm.knowledge.store.importers import import_file
from kemm.knowledge.store.llm_output import (
    parse_grade,
    parse_stage_group,
    parse_tcga_llm_output,
    parse_tnm,
    tcga_fields_to_report,
)
from kemm.knowledge.generate.schemas import NOT_REPORTED, RefinedReport

REPORTS = SHARED_DATA / "raw" / "tcga-path-report" / "Reports"


def write_source(cache_dir, source, outputs):
    sc = SourceCache(cache_dir, source)
    sc.ensure_identity(dict(IDENTITY, model_id=source))
    with sc.writer() as w:
        for cid, out in outputs.items():
            w.append(CacheRecord(**{"key": record_key(IDENTITY, cid), "case_id": cid, "status": "ok" if out else "failed",
                      "output": RefinedReport.model_validate(out).model_dump(mode="json") if out else None,
                      "attempts": 1, "finish_reason": "stop"}))


# ------------------------------------------------------------------ diff
GA = ["G1", "G1", "G2", "G2", "G3", "G3"]
GB = ["G1", "G2", "G2", "G2", "G3", "G1"]


def test_cohen_kappa_hand_computed():
    # po = 4/6; A: 2/2/2, B: 2/3/1 -> pe = (4 + 6 + 2) / 36 = 1/3; kappa = (2/3 - 1/3) / (2/3) = 0.5
    assert cohen_kappa(GA, GB) == pytest.approx(0.5)
    assert cohen_kappa(["a", "b"], ["a", "b"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # undefined
    sk = pytest.importorskip("sklearn.metrics")
    assert cohen_kappa(GA, GB) == pytest.approx(sk.cohen_kappa_score(GA, GB))


def test_diff_two_sources(tmp_path):
    pts_a = ["T2a", "T2a", "T3b", "T1", "T2b", "not reported"]
    pts_b = ["T2a", "T2b", "T3a", "T1", "T2b", "T1"]
    a = {f"TCGA-AA-000{i}": dict(VALID_REPORT, grade=GA[i], pT=pts_a[i]) for i in range(6)}
    b = {f"TCGA-AA-000{i}": dict(VALID_REPORT, grade=GB[i], pT=pts_b[i], histologic_type="Urothelial  Carcinoma.")
         for i in range(6)}
    a["TCGA-AA-0100"] = VALID_REPORT  # only in A
    b["TCGA-AA-0006"] = None  # only in B (failed)
    write_source(tmp_path, "a", a)
    write_source(tmp_path, "b", b)
    d = diff_sources(tmp_path, "a", "b")
    assert (d.shared, d.only_a, d.only_b) == (6, 1, 1)
    f = {x.field: x for x in d.fields}
    assert f["grade"].agreement == pytest.approx(4 / 6) and f["grade"].kappa == pytest.approx(0.5)
    assert f["pT"].agree == 3 and f["pT_number"].agree == 5
    assert f["pT"].both_reported == 5 and f["pT"].agree_both_reported == 3
    assert f["histologic_type"].agreement == 1.0  # normalised case/whitespace/punctuation
    assert f["histologic_type"].kappa is None  # free text: no kappa
    assert ("G3", "G1", 1, ["TCGA-AA-0005"]) in f["grade"].disagreements
    md = d.to_markdown()
    assert "| grade | 6 | 66.7% | 0.500 |" in md
    r = CliRunner().invoke(app, ["diff", "a", "b", "--cache-dir", str(tmp_path), "--out", str(tmp_path / "d.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "d.json").read_text())["fields"][1]["kappa"] == 0.5
    r = CliRunner().invoke(app, ["diff", "a", "missing", "--cache-dir", str(tmp_path)])
    assert r.exit_code == 2


def test_diff_outputs_in_memory():
    d = diff_outputs({"x": dict(VALID_REPORT, tumor_size="2.5 cm")}, {"x": dict(VALID_REPORT, tumor_size="25 mm")})
    assert {f.field: f.agree for f in d.fields}["tumor_size"] == 1


# ------------------------------------------------------------------ tcga llm_output parsing
NUMBERED = """ 1. "Site": Bladder. Justified as the report clearly states bladder.
2. "Laterality": Not provided. The report does not say.
3. "Histology": Urothelial carcinoma. Justified as stated in the diagnosis.
4. "Stage": T2N0Mx. Justified as the tumour invades muscularis propria.
5. "Grade": High grade. Justified as stated.
6. "Behavior": Malignant. Justified as invasive."""
PLAIN = """ Site: Uterus
Justification: endometrium.

Laterality: Not provided
Histology: Endometrial adenocarcinoma
Stage: IA (T1aN0M0), based on the depth of invasion
Grade: Grade III (High grade or poorly differentiated)
Behavior: Malignant (as it is a cancer)"""


def test_parse_tcga_variants():
    f, problems = parse_tcga_llm_output(NUMBERED)
    assert problems == []
    assert f == {"site": "Bladder", "laterality": NOT_REPORTED, "histology": "Urothelial carcinoma",
                 "stage": "T2N0Mx", "grade": "High grade", "behavior": "Malignant"}
    d = RefinedReport.model_validate(tcga_fields_to_report(f))
    assert (d.pT, d.pN, d.pM, d.grade, d.stage_group) == ("T2", "N0", "MX", "high grade", NOT_REPORTED)
    assert "Site: Bladder." in d.key_statements and "Laterality" not in " ".join(d.key_statements)
    f, problems = parse_tcga_llm_output(PLAIN)
    assert problems == [] and f["stage"].startswith("IA (T1aN0M0)")
    d = RefinedReport.model_validate(tcga_fields_to_report(f))
    assert (d.pT, d.pN, d.pM, d.grade, d.stage_group) == ("T1a", "N0", "M0", "G3", "IA")
    f, problems = parse_tcga_llm_output("B. Site: Omentum, Laterality: Not provided, Histology: Fibroadipose tissue, Stage: Not provided")
    assert f["site"] == "Omentum" and f["histology"] == "Fibroadipose tissue" and len(problems) == 2


@pytest.mark.parametrize("stage, tnm, group", [
    ("pT2b pN2 RO", ("T2b", "N2", NOT_REPORTED), NOT_REPORTED),
    ("pT2a pNO", ("T2a", "N0", NOT_REPORTED), NOT_REPORTED),
    ("Stage IIIA", (NOT_REPORTED,) * 3, "IIIA"),
    ("T3 N0 M0", ("T3", "N0", "M0"), NOT_REPORTED),
    ("not reported", (NOT_REPORTED,) * 3, NOT_REPORTED),
])
def test_parse_stage(stage, tnm, group):
    t = parse_tnm(stage)
    assert (t["pT"], t["pN"], t["pM"]) == tnm
    assert parse_stage_group(stage) == group


@pytest.mark.parametrize("grade, want", [
    ("Grade IV (High grade or undifferentiated)", "G4"), ("III", "G3"), ("4 (of 4)", "G4"),
    ("High-grade, possibly WHO grade IV", "high grade"), ("Moderately differentiated", "G2"), ("not reported", NOT_REPORTED),
])
def test_parse_grade(grade, want):
    assert parse_grade(grade) == want


def test_import_tcga_csv_failures_recorded(tmp_path):
    import csv

    p = tmp_path / "BLADDER.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pdf_file_name_path", "ocr_text", "llm_output"])
        w.writerow(["TCGA-AA-0001.X.PDF", "Urothelial carcinoma, high grade, invading the muscularis propria; pT2 N0 Mx.", NUMBERED])
        w.writerow(["TCGA-AA-0001.Y.PDF", "second report", NUMBERED])  # same patient: first parseable kept
        w.writerow(["TCGA-AA-0002.X.PDF", "some report", "I am sorry, I cannot help with that."])
        w.writerow(["not-a-barcode", "x", NUMBERED])
        w.writerow(["TCGA-AA-0003.X.PDF", "  ", NUMBERED])  # an LLM output for an empty OCR text
    s = import_file(p, "tcga-path-report", "imp", tmp_path / "kc", model_name="llama-2-70b (as published)")
    assert (s.rows, s.cases, s.ok, s.failed, s.patients_with_several_rows) == (5, 4, 2, 2, 1)
    sc = SourceCache(tmp_path / "kc", "imp")
    recs = sc.by_case()
    assert recs["TCGA-AA-0002"].status == "failed" and "cannot help" in recs["TCGA-AA-0002"].raw_output
    assert recs["TCGA-AA-0001"].input_meta["n_rows_for_case"] == 2 and recs["TCGA-AA-0001"].input_meta["row"] == 0
    man = sc.read_manifest()
    assert man["identity"]["backend"] == "import" and man["identity"]["prompt_sha"] == "import:tcga-path-report"
    assert man["identity"]["model_id"] == "llama-2-70b (as published)" and len(man["provenance"]["import_sha256"]) == 64
    # idempotent
    s2 = import_file(p, "tcga-path-report", "imp", tmp_path / "kc", model_name="llama-2-70b (as published)")
    assert s2.written == 0 and s2.unchanged == 4
    # the audit finds each row's own ocr_text; output about an empty report is all unsupported
    rep = audit_source(tmp_path / "kc", "imp")
    assert rep.faithfulness.checked_records == 2 and rep.faithfulness.unverifiable_records == 0
    assert rep.faithfulness.empty_source_records == ["TCGA-AA-0003"]
    assert [r.case_id for r in rep.flagged] == ["TCGA-AA-0003"]
    assert all(not c.supported for c in rep.flagged[0].claims)


def test_import_jsonl_bad_lines_become_failures(tmp_path):
    good = dict(VALID_REPORT, case_id="C1", report_text="Urothelial carcinoma high grade pT2a N0, 3.5 cm, 0/12 nodes, stage II.")
    p = tmp_path / "out.jsonl"
    p.write_text("\n".join([
        json.dumps(good),
        '{"case_id": "C2", "grade": ',  # torn JSON
        json.dumps(dict(VALID_REPORT, case_id="C3", pT="T9")),  # schema violation
        json.dumps(dict(VALID_REPORT)),  # no case id
    ]) + "\n")
    r = CliRunner().invoke(app, ["import", str(p), "--format", "jsonl", "--source", "j", "--cache-dir", str(tmp_path / "kc")])
    assert r.exit_code == 0, r.output
    recs = SourceCache(tmp_path / "kc", "j").by_case()
    assert recs["C1"].status == "ok"
    assert recs["line-2"].status == "failed" and recs["line-2"].raw_output.startswith('{"case_id": "C2"')
    assert recs["C3"].status == "failed" and any("pT" in e for e in recs["C3"].errors)
    assert recs["line-4"].status == "failed"
    rep = audit_source(tmp_path / "kc", "j")
    assert rep.faithfulness.checked_records == 1
    assert rep.metrics["faithfulness"] == 1.0, rep.flagged and rep.flagged[0].unsupported


@pytest.mark.skipif(not (REPORTS / "BLADDER.csv").is_file(), reason=f"real data absent: {REPORTS}/BLADDER.csv")
def test_import_real_bladder(tmp_path):
    s = import_file(REPORTS / "BLADDER.csv", "tcga-path-report", "blca-llm", tmp_path)
    assert s.rows == 412 and s.cases == 411 and s.patients_with_several_rows == 1
    assert s.parse_rate > 0.95
    recs = SourceCache(tmp_path, "blca-llm").by_case()
    with_t = sum(1 for r in recs.values() if r.status == "ok" and r.output["pT"] != NOT_REPORTED)
    assert with_t > 100
    rep = audit_source(tmp_path, "blca-llm")
    assert rep.metrics["verifiable"] == 1.0  # every record finds its own row's ocr_text
