"""Audit: planted unsupported claims are flagged, faithful outputs are not; normalisation; HTML; exit codes."""
from __future__ import annotations

import csv
import os
import stat
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from fakes import IDENTITY, VALID_REPORT
from kemm.knowledge.records import CacheRecord
from kemm.knowledge.review.audit import audit_source, parse_thresholds
from kemm.knowledge.review.audit_html import render_audit_html
from kemm.knowledge.store.cache import SourceCache, record_key, sha256_text
from kemm.knowledge.review.claims import SourceFacts, check_output, text_claims
from kemm.knowledge.cli import app
from kemm.knowledge.generate.schemas import RefinedReport


SOURCE = (
    "FINAL DIAGNOSIS: Urinary bladder, cystectomy: invasive urothelial carcinoma, high grade (WHO grade III). "
    "Tumor size 2 .5 cm (2.5 x 2.0 x 1.0 cm). Pathologic stage pT 2a pNO. Three of fourteen lymph nodes examined "
    "in total; 3/14 with metastasis. AJCC stage IIIA. Margins negative. <script>alert(1)</script>"
)

FAITHFUL = dict(
    VALID_REPORT, grade="G3", pT="T2a", pN="N0", pM="not reported", stage_group="IIIA", tumor_size="25 mm",
    nodes_positive=3, nodes_examined=14,
    key_statements=["High grade (grade 3) urothelial carcinoma, pT2a N0.", "Tumour 2.5 cm; 3/14 nodes positive.",
                    "Stage IIIA, margins negative."],
    summary="High-grade urothelial carcinoma, 2.5 x 2.0 x 1.0 cm, pT2a, grade III, stage IIIA.",
)
PLANTED = dict(
    FAITHFUL, pT="T3b", tumor_size="4.5 cm", grade="G4", stage_group="IV", pM="M1",
    key_statements=["Tumour 4.5 cm, pT3b N2 M1.", "7/14 nodes positive; Ki-67 80%."],
    summary="Grade 4 tumour, stage IV.",
)


def write_reports(path, texts: dict[str, str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pdf_file_name_path", "ocr_text"])
        for cid, t in texts.items():
            w.writerow([f"{cid}-01Z-00-DX1.PDF", t])


def write_source(cache_dir, source, reports_file, outputs: dict[str, dict], texts: dict[str, str]) -> None:
    sc = SourceCache(cache_dir, source)
    sc.ensure_identity(IDENTITY)
    with sc.writer() as w:
        for cid, out in outputs.items():
            ok = out is not None
            w.append(CacheRecord(**{"key": record_key(IDENTITY, texts[cid]), "case_id": cid, "status": "ok" if ok else "failed",
                      "input_sha": sha256_text(texts[cid].strip()),
                      "output": RefinedReport.model_validate(out).model_dump(mode="json") if ok else None,
                      "raw_output": "{not json", "errors": [] if ok else ["invalid JSON"], "attempts": 1 if ok else 3,
                      "finish_reason": "stop" if ok else "length", "input_meta": {"file": str(reports_file)}}))


@pytest.fixture()
def planted(tmp_path):
    texts = {f"TCGA-AA-000{i}": f"{SOURCE} Accession {i}." for i in range(1, 5)}
    rf = tmp_path / "reports.csv"
    write_reports(rf, texts)
    outs = {"TCGA-AA-0001": FAITHFUL, "TCGA-AA-0002": PLANTED, "TCGA-AA-0003": FAITHFUL, "TCGA-AA-0004": None}
    write_source(tmp_path / "kc", "src", rf, outs, texts)
    return tmp_path


def test_faithful_output_has_no_unsupported_claims():
    claims = check_output(RefinedReport.model_validate(FAITHFUL).model_dump(), SOURCE)
    assert claims and all(c.supported for c in claims), [c for c in claims if not c.supported]
    kinds = {c.kind for c in claims}
    assert {"tnm", "stage", "grade", "grade_word", "size", "count"} <= kinds


def test_planted_claims_are_flagged_with_spans():
    claims = check_output(RefinedReport.model_validate(PLANTED).model_dump(), SOURCE)
    bad = {(c.where, c.value) for c in claims if not c.supported}
    assert {("pT", "T3b"), ("tumor_size", "4.5 cm"), ("grade", "grade 4"), ("stage_group", "stage IV"), ("pM", "M1")} <= bad
    assert {("key_statements[0]", "T3b"), ("key_statements[0]", "N2"), ("key_statements[0]", "M1"),
            ("key_statements[1]", "7/14"), ("key_statements[1]", "80"), ("summary", "grade 4"), ("summary", "stage IV")} <= bad
    for c in claims:
        stmt = PLANTED["key_statements"][0]
        if c.where == "key_statements[0]" and c.value == "T3b":
            assert stmt[c.start:c.end] == "pT3b"


@pytest.mark.parametrize(
    "source, output_text, supported",
    [
        ("tumour measures 2 .5 cm", "2.5 cm", True),
        ("tumour measures 2. 5 cm", "2.5 cm", True),
        ("tumour measures 2,5 cm", "2.5 cm", True),
        ("tumour measures 2.5 cm", "25 mm", True),
        ("tumour measures 25 mm", "2.5 cm", True),
        ("tumour measures 2.5 mm", "2.5 cm", False),
        ("grade III of III", "grade 3", True),
        ("grade III", "G3", True),
        ("grade 3", "grade III", True),
        ("G3", "grade 3", True),
        ("grade II", "grade 3", False),
        ("poorly differentiated", "grade 3", True),
        ("pT 2a", "pT2a", True),
        ("T2a", "pT2a", True),
        ("ypT2a", "T2a", True),
        ("pT2a", "T2", True),  # less specific claim: supported
        ("pT2", "T2a", False),  # more specific claim: not
        ("pT2a pNO", "N0", True),
        ("AJCC stage: pTla NO", "T1a N0", True),  # OCR: l for 1, O for 0
        ("pTlb/pNx", "T1b", True),
        ("5 ml of fluid", "M1", False),
        ("there were no nodes", "N0", False),
        ("pT2aN0M0", "M0", True),
        ("pT2a N0 Mx", "M0", False),
        ("Stage IIIA", "stage IIIA", True),
        ("stage 3a", "stage IIIA", True),
        ("stage IIIA", "stage III", True),
        ("stage III", "stage IIIB", False),
        ("three of fourteen lymph nodes", "3/14", True),
        ("3 of 14 lymph nodes", "3/14 nodes", True),
        ("3 of 14 lymph nodes", "4/14 nodes", False),
        ("carcinoma .T3G3 NO", "T3 N0 G3", True),  # OCR glues grade into the TNM string
        ("5 mg 2 tablets", "G2", False),
        ("high-grade carcinoma", "high grade", True),
        ("low grade papillary", "high grade", False),
        # issue 14 item 9: OCR forms the matching missed
        ("Pathologic stage: pT1 b N0", "pT1b", True),
        ("pT1 and N0", "T1a", False),  # a word after a space is not a subcategory
        ("FUHRMAN NUCLEAR GRADE):2", "grade 2", True),
        ("STAGE (AJCC): II", "stage II", True),
    ],
)
def test_normalisation(source, output_text, supported):
    facts = SourceFacts.from_text(source)
    from kemm.knowledge.review.claims import check_claim

    claims = text_claims(output_text, "summary")
    assert claims, output_text
    assert all(check_claim(c, facts, p) for c, p in claims) is supported


def test_node_totals_over_stations_are_their_own_claim_kind_checked_by_arithmetic():
    """issue 14 item 9: the rules source sums per-station counts; the report never writes the total."""
    from kemm.knowledge.review.claims import check_output

    text = ("Right neck level II: 3/11 lymph nodes positive. Level III lymph nodes: 5/10 positive. "
            "Level IV: 0/7 lymph nodes. Received 12/05 in formalin.")
    base = dict(VALID_REPORT, key_statements=[], summary="Nothing stated.")
    got = {c.where: (c.kind, c.supported) for c in check_output(dict(base, nodes_positive=8, nodes_examined=28), text)}
    assert got["nodes_positive"] == ("node_total", True) and got["nodes_examined"] == ("node_total", True)
    said = check_output(dict(base, key_statements=["8/28 lymph nodes positive."]), text)
    assert [(c.kind, c.supported) for c in said if c.where == "key_statements[0]"] == [("node_total", True)]
    wrong = {c.where: (c.kind, c.supported) for c in check_output(dict(base, nodes_positive=9, nodes_examined=28), text)}
    assert wrong["nodes_positive"] == ("count", False)  # a total that is not the sum stays unsupported
    stated = {c.where: (c.kind, c.supported) for c in check_output(dict(base, nodes_positive=3, nodes_examined=11), text)
              if c.where.startswith("nodes")}
    assert stated == {"nodes_positive": ("count", True), "nodes_examined": ("count", True)}  # stated: a plain count


def test_not_reported_is_never_a_claim():
    out = RefinedReport.model_validate(dict(VALID_REPORT, grade="not reported", pT="not reported", pN="not reported",
                                            stage_group="not reported", tumor_size="not reported",
                                            nodes_positive="not reported", nodes_examined="not reported",
                                            key_statements=[], summary="Nothing stated.")).model_dump()
    assert check_output(out, "irrelevant text 1 2 3") == []


def test_audit_source_metrics(planted):
    rep = audit_source(planted / "kc", "src")
    assert rep.validity.ok == 3 and rep.validity.failed == 1
    assert rep.validity.truncated == ["TCGA-AA-0004"]
    assert rep.metrics["parse_rate"] == 0.75
    assert rep.metrics["faithfulness"] == pytest.approx(2 / 3, abs=1e-3)
    assert [r.case_id for r in rep.flagged] == ["TCGA-AA-0002"]
    assert rep.faithfulness.unverifiable_records == 0
    assert rep.coverage["pM"] == pytest.approx(2 / 3, abs=1e-3)
    assert rep.coverage["histologic_type"] == 0.0


def test_source_sha_mismatch_is_unverifiable(planted):
    write_reports(planted / "reports.csv", {f"TCGA-AA-000{i}": f"{SOURCE} edited {i}" for i in range(1, 5)})
    rep = audit_source(planted / "kc", "src")
    assert rep.faithfulness.checked_records == 0 and rep.faithfulness.unverifiable_records == 3
    assert "input_sha mismatch" in rep.records[0].unverifiable
    assert "faithfulness" not in rep.metrics


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.tags, self.text, self.marks, self._in_mark = [], [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        d = dict(attrs)
        if d.get("id", "").startswith("case-"):
            self.ids.append(d["id"][5:])
        self._in_mark = tag == "mark"

    def handle_endtag(self, tag):
        if tag == "mark":
            self._in_mark = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_mark:
            self.marks.append(data)


def test_html_parses_lists_flagged_and_escapes(planted):
    rep = audit_source(planted / "kc", "src")
    page = render_audit_html(rep)
    p = _Collector()
    p.feed(page)
    p.close()
    assert p.ids == ["TCGA-AA-0002"]
    assert "script" not in p.tags and "link" not in p.tags and "img" not in p.tags  # escaped, self-contained
    assert "<script>alert(1)</script>" in "".join(p.text)
    assert {"pT3b", "4.5 cm", "7/14", "T3b"} & set(p.marks)
    assert page.index("Summary") < page.index("Flagged records")


def test_audit_cli_fail_under(planted):
    run = CliRunner()
    base = ["audit", "src", "--cache-dir", str(planted / "kc")]
    r = run.invoke(app, base + ["--fail-under", "faithfulness=0.5", "--html", str(planted / "a.html"),
                                "--json", str(planted / "a.json")])
    assert r.exit_code == 0, r.output
    assert (planted / "a.html").is_file() and (planted / "a.json").is_file()
    r = run.invoke(app, base + ["--fail-under", "faithfulness=0.98"])
    assert r.exit_code == 3
    r = run.invoke(app, base + ["--fail-under", "parse_rate=0.7", "--fail-under", "claim_support=0.5"])
    assert r.exit_code == 0, r.output
    r = run.invoke(app, base + ["--fail-under", "parse_rate=0.8"])
    assert r.exit_code == 3
    r = run.invoke(app, base + ["--fail-under", "bogus=1"])
    assert r.exit_code == 2
    with pytest.raises(ValueError):
        parse_thresholds(["faithfulness"])


def test_pbk_source_validity_only(tmp_path):
    ident = dict(IDENTITY, task="pbk", prompt_name="pbk", schema_name="PrognosticKnowledge")
    sc = SourceCache(tmp_path, "pbk")
    sc.ensure_identity(ident)
    out = {"cancer_type": "BLCA",
           "prognostic_factors": [{"name": "stage", "category": "stage", "direction": "unfavourable",
                                   "statement": "Higher pT stage (T3-T4) predicts shorter survival."}],
           "risk_levels": {"low": "Non-muscle invasive.", "intermediate": "Muscle invasive.", "high": "Node positive."}}
    with sc.writer() as w:
        w.append(CacheRecord(**{"key": "k1", "case_id": "BLCA", "status": "ok", "output": out, "attempts": 1, "finish_reason": "stop"}))
    rep = audit_source(tmp_path, "pbk")
    assert rep.faithfulness is None and rep.validity.ok == 1 and "faithfulness" not in rep.metrics
    assert rep.validity.statements_per_record.n == 1
    page = render_audit_html(rep)
    HTMLParser().feed(page)
    r = CliRunner().invoke(app, ["audit", "pbk", "--cache-dir", str(tmp_path), "--fail-under", "faithfulness=0.9"])
    assert r.exit_code == 3
    r = CliRunner().invoke(app, ["audit", "pbk", "--cache-dir", str(tmp_path), "--fail-under", "parse_rate=1"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_audit_html_follows_the_umask(planted, tmp_path, umask, mode):
    """The HTML report is an output like any other: created with the user's umask, not 0600 (issue 14)."""
    page = tmp_path / "audit.html"
    old = os.umask(umask)
    try:
        r = CliRunner().invoke(app, ["audit", "src", "--cache-dir", str(planted / "kc"), "--html", str(page)])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(page.stat().st_mode) == mode
