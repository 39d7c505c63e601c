"""The ``rules`` backend: deterministic report extraction and the curated PBK table."""
from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from importlib import resources
from pathlib import Path

import pytest
import yaml

from conftest import SHARED_DATA
from kemm.knowledge.generate.backends.base import BackendError, GenerationRequest
from kemm.knowledge.generate.backends.registry import create_backend, known_backends
from kemm.knowledge.generate.backends.rules import load_pbk_table, pbk_cancer_types, pbk_raw, pbk_references
from kemm.knowledge.generate.repair import generate_validated
from kemm.knowledge.rules.extract import NOTHING_FOUND, extract, extract_report
from kemm.knowledge.generate.schemas import NOT_REPORTED, PrognosticKnowledge, RefinedReport

NR = NOT_REPORTED
REPORTS_DIR = SHARED_DATA / "raw" / "tcga-path-report" / "Reports"

# --------------------------------------------------------------------------- snippets -> exact fields

BLADDER = """FINAL DIAGNOSIS: Bladder, radical cystectomy:
- Invasive high-grade urothelial carcinoma.
- Tumor invades muscularis propria.
Tumor size: 3.5 x 2.0 x 1.0 cm.
Lymph nodes: 2/14 positive for metastatic carcinoma.
Margins: negative for carcinoma.
Lymphovascular invasion: not identified.
Perineural invasion: present.
pTNM: pT2a N1 MX"""

SNIPPETS: list[tuple[str, str, dict]] = [
    ("synoptic bladder", BLADDER, dict(
        histologic_type="urothelial carcinoma", grade="high grade", pT="T2a", pN="N1", pM="MX",
        tumor_size="3.5 cm", nodes_positive=2, nodes_examined=14, margin_status="negative",
        lymphovascular_invasion="absent", perineural_invasion="present")),
    ("OCR: split substage, NO for N0",
     "PATHOLOGIC STAGE: pT2 a NO MX. Histologic type: Adenocarcinoma. Histologic grade: moderately differentiated.",
     dict(pT="T2a", pN="N0", pM="MX", histologic_type="adenocarcinoma", grade="G2")),
    ("OCR: l for 1 (pTla)",
     "AJCC stage: pTla pNO. Endometrioid adenocarcinoma, FIGO grade 1.",
     dict(pT="T1a", pN="N0", pM=NR, histologic_type="endometrioid adenocarcinoma", grade="G1")),
    ("y prefix, size in mm",
     "Pathologic stage: ypT3 N1b. Residual adenocarcinoma. Tumour size: 25 mm.",
     dict(pT="T3", pN="N1b", tumor_size="25 mm")),
    ("spaced TNM", "Pathological Staging (pTNM): pT 2 N 0 M X. Squamous cell carcinoma, poorly differentiated.",
     dict(pT="T2", pN="N0", pM="MX", grade="G3", histologic_type="squamous cell carcinoma")),
    ("unprefixed TNM and roman stage group", "Squamous cell carcinoma. T3b N1 MX. AJCC Stage IIIA.",
     dict(pT="T3b", pN="N1", pM="MX", stage_group="IIIA")),
    ("FIGO stage grouping with substage", "FIGO (2009) Stage Grouping: IB1. Squamous carcinoma.",
     dict(stage_group="IB1", histologic_type="squamous cell carcinoma")),
    ("WHO grade in roman numerals", "Glioblastoma, WHO grade IV.",
     dict(histologic_type="glioblastoma", grade="G4", pT=NR)),
    ("WHO grade II oligodendroglioma", "Oligodendroglioma (WHO grade II), 1p/19q codeleted.",
     dict(histologic_type="oligodendroglioma", grade="G2")),
    ("Nottingham grade, LVI present",
     "Invasive ductal carcinoma. Nottingham histologic grade: 3. Tumor size: 2.2 cm. Lymph-vascular invasion: Present.",
     dict(histologic_type="invasive ductal carcinoma", grade="G3", tumor_size="2.2 cm", lymphovascular_invasion="present")),
    ("Gleason is not a G grade",
     "Prostatic adenocarcinoma, Gleason score 7 (3+4). Primary Gleason grade: 3. Secondary Gleason grade: 4. "
     "pT3a N0 MX. Margins: positive (focal).",
     dict(grade=NR, pT="T3a", margin_status="positive", histologic_type="adenocarcinoma")),
    ("station counts summed, word numbers",
     "Metastatic carcinoma in three of nine lymph nodes. Seven lymph nodes, negative (0/7).",
     dict(nodes_positive=3, nodes_examined=16)),
    ("explicit node totals", "Number of lymph nodes examined: 12. Number of lymph nodes involved: 0.",
     dict(nodes_positive=0, nodes_examined=12)),
    ("pN with count, R0 residual", "Colon: adenocarcinoma, moderately differentiated. pT3 pN1 (2/18). R0.",
     dict(pT="T3", pN="N1", nodes_positive=2, nodes_examined=18, margin_status="negative", grade="G2")),
    ("close margin", "Margins: negative, but close (1 mm to deep margin).", dict(margin_status="close")),
    ("negated LVI and PNI together", "No lymphovascular or perineural invasion is identified.",
     dict(lymphovascular_invasion="absent", perineural_invasion="absent")),
    ("low-grade urothelial, PIN ignored",
     "Papillary urothelial carcinoma, low grade, non-invasive (pTa). Prostate: high-grade PIN.",
     dict(histologic_type="urothelial carcinoma", grade="low grade", pT="Ta")),
    ("CAP option list is not a stage",
     "Primary Tumor (pT) pTX: Cannot be assessed pT1: Solitary tumor pT2: Multiple tumors pT3: Tumor invading. "
     "Diagnosis: hepatocellular carcinoma.",
     dict(pT=NR, histologic_type="hepatocellular carcinoma")),
    ("Tis beside invasive T", "PATHOLOGIC TNM STAGE: pTis,T2bNOMX", dict(pT="T2b", pN="N0", pM="MX")),
    ("greatest of three dimensions", "Hepatocellular carcinoma, Edmondson-Steiner grade 2 of 4. Tumor measures 4.2 x 3 x 5.5 cm.",
     dict(tumor_size="5.5 cm", grade="G2")),
    ("negated histology", "Lymph node, biopsy: negative for metastatic carcinoma. No evidence of adenocarcinoma.",
     dict(histologic_type=NR)),
    ("nothing to extract", "Specimen received in formalin. Gross description only.", dict(
        histologic_type=NR, grade=NR, pT=NR, pN=NR, pM=NR, stage_group=NR, tumor_size=NR,
        nodes_positive=NR, nodes_examined=NR, margin_status=NR,
        lymphovascular_invasion=NR, perineural_invasion=NR)),
]


@pytest.mark.parametrize("label,text,expected", SNIPPETS, ids=[s[0] for s in SNIPPETS])
def test_snippet_fields(label, text, expected):
    rep = extract_report(text)
    got = rep.model_dump()
    for field, want in expected.items():
        assert got[field] == want, f"{label}: {field} = {got[field]!r}, expected {want!r}"
    assert_faithful(text)


def test_statements_and_summary_are_built_from_facts():
    rep = extract_report(BLADDER)
    assert rep.key_statements == [
        "Urothelial carcinoma, high grade.",
        "Pathologic stage pT2a N1 MX.",
        "Tumour size 3.5 cm in greatest dimension.",
        "2 of 14 lymph nodes positive.",
        "Margins negative.",
        "No lymphovascular invasion.",
        "Perineural invasion present.",
    ]
    assert rep.summary.startswith("Urothelial carcinoma, high grade, pT2a N1 MX, tumour size 3.5 cm")
    assert rep.statements()[-1] == rep.summary
    empty = extract_report("Specimen received in formalin.")
    assert empty.key_statements == [] and empty.summary == NOTHING_FOUND
    assert extract_report("").summary == NOTHING_FOUND


def test_extraction_values_and_layout_independence():
    """Every structured field of the bladder report, and the same output whatever the line breaks."""
    rep = extract_report(BLADDER)
    assert rep.model_dump(exclude={"key_statements", "summary"}) == {
        "histologic_type": "urothelial carcinoma", "grade": "high grade", "pT": "T2a", "pN": "N1", "pM": "MX",
        "stage_group": NR, "tumor_size": "3.5 cm", "nodes_positive": 2, "nodes_examined": 14,
        "margin_status": "negative", "lymphovascular_invasion": "absent", "perineural_invasion": "present",
    }
    assert rep.summary == ("Urothelial carcinoma, high grade, pT2a N1 MX, tumour size 3.5 cm, 2/14 lymph nodes "
                           "positive, margins negative, lymphovascular invasion absent, perineural invasion present.")
    reflowed = "  \n ".join(BLADDER.split())  # OCR line breaks and spacing differ between scans
    assert extract_report(reflowed) == rep


# --------------------------------------------------------------------------- faithfulness

_OCR = str.maketrans({"l": "1", "I": "1", "i": "1", "|": "1", "O": "0", "o": "0"})
_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_ROMAN = {"1": "I", "2": "II", "3": "III", "4": "IV"}


def _numbers(s: str) -> list[str]:
    return re.findall(r"\d+(?:\.\d+)?", s)


def _counts_in(snippet: str) -> tuple[int, int]:
    low = snippet.lower()
    for w, d in sorted(_WORDS.items(), key=lambda kv: -len(kv[0])):
        low = re.sub(rf"\b{w}\b", d, low)
    m = re.search(r"(\d+)\s*/\s*(\d+)", low) or re.search(r"(\d+)\s+(?:out\s+)?of\s+(\d+)", low)
    assert m, f"no count in node evidence {snippet!r}"
    return int(m.group(1)), int(m.group(2))


def assert_faithful(text: str) -> None:
    """Every number and code in the extracted fields is supported by a verbatim snippet of the source."""
    flat = re.sub(r"\s+", " ", text)
    ex = extract(text)
    for field, snippets in ex.evidence.items():
        for s in snippets:
            assert s in flat, f"evidence for {field} not in source: {s!r}"
    ev = {k: " ".join(v) for k, v in ex.evidence.items()}
    for field in ("pT", "pN", "pM"):
        val = getattr(ex, field)
        if val == NR:
            continue
        snip = ev.get(field) or ev["pT"]
        digits = re.sub(r"\D", "", val)
        if digits:
            assert digits[0] in snip.translate(_OCR), f"{field}={val} not supported by {snip!r}"
    if ex.stage_group != NR:
        assert re.match(r"\d?[IV]*", ex.stage_group).group(0) in ev["stage_group"]
    if ex.tumor_size != NR:
        num = ex.tumor_size.split()[0]
        assert num in _numbers(ev["tumor_size"]) and num in _numbers(flat)
    if ex.grade.startswith("G"):
        d = ex.grade[1]
        snip = ev["grade"]
        assert d in snip or _ROMAN[d] in snip.upper().replace("L", "I") or "differentiated" in snip.lower(), snip
    if isinstance(ex.nodes_examined, int):
        if ex.nodes_summed:
            counts = [_counts_in(s) for s in ex.evidence["nodes"]]
            assert sum(c[0] for c in counts) == ex.nodes_positive
            assert sum(c[1] for c in counts) == ex.nodes_examined
        else:
            low = (ev.get("nodes_total", "") + " " + ev.get("nodes", "")).lower()
            words = {_WORDS[w] for w in re.findall(r"[a-z]+", low) if w in _WORDS}
            for n in (ex.nodes_positive, ex.nodes_examined):
                if isinstance(n, int):
                    ints = {int(x) for x in re.findall(r"\d+", low)}
                    assert n in ints or str(n) in words, f"{n} not in {low!r}"
    # statements add no number the source lacks (summed node totals excepted)
    rep = extract_report(text)
    allowed = set(_numbers(flat.translate(_OCR))) | set(_WORDS.values()) & set(_words_as_digits(flat))
    if ex.nodes_summed:
        allowed |= {str(ex.nodes_positive), str(ex.nodes_examined)}
    for s in rep.statements():
        for n in _numbers(s):
            assert n in allowed, f"statement {s!r} has {n}, not in the source"


def _words_as_digits(flat: str) -> list[str]:
    return [_WORDS[w] for w in re.findall(r"[a-z]+", flat.lower()) if w in _WORDS]


# --------------------------------------------------------------------------- real reports

_FILE_T = re.compile(r"(?<![A-Za-z])[yp]{0,2}T\s?([0-4]|is|X|a)([a-d])?(?![a-z])")
_ROMAN_INT = {"I": 1, "II": 2, "III": 3, "IV": 4}
_HIGH = {"G3", "G4", "high grade"}
_LOW = {"G1", "G2", "low grade"}
MAX_ROWS_PER_FILE = 300  # keeps the suite fast; the full-file rates are in the issue note


def file_t(stage: str) -> str | None:
    """T category in a report file's own (LLM-extracted) ``stage`` column."""
    m = _FILE_T.search(stage or "")
    return f"T{m.group(1)}{m.group(2) or ''}" if m else None


def file_grade(grade: str) -> str | None:
    """Normalise a report file's own ``grade`` column: 'III (High grade)' -> G3, 'High-grade' -> high grade."""
    s = (grade or "").strip()
    if not s:
        return None
    m = re.search(r"\bG\s?([1-4])\b", s)
    if m:
        return "G" + m.group(1)
    m = re.search(r"(?i)\bgrade\s*(IV|III|II|I|[1-4])\b", s) or re.match(r"^(IV|III|II|I|[1-4])\b", s)
    if m:
        v = m.group(1).upper()
        return f"G{_ROMAN_INT.get(v, v)}"
    low = s.lower()
    for word, g in (("undifferentiated", "G4"), ("poorly", "G3"), ("moderate", "G2"), ("well", "G1")):
        if word in low:
            return g
    if re.search(r"high[- ]?grade", low):
        return "high grade"
    if re.search(r"low[- ]?grade", low):
        return "low grade"
    return None


def grade_agrees(ours: str, theirs: str) -> bool:
    if ours == theirs:
        return True
    if "grade" in ours or "grade" in theirs:  # high/low grade vs a numeric grade
        return (ours in _HIGH and theirs in _HIGH) or (ours in _LOW and theirs in _LOW)
    return False


def _t_number(t: str) -> str:
    return re.sub(r"[a-d]$", "", t)


# Observed (af49b2a extractor, shared TCGA files): T 0.965 of 945 pairs, grade 0.921 of 1422 pairs.
POOLED_MIN_PAIRS, POOLED_MIN_T, POOLED_MIN_GRADE = 500, 0.9, 0.85


@pytest.mark.realdata
def test_agreement_with_report_files():
    files = sorted(REPORTS_DIR.glob("*.csv")) if REPORTS_DIR.is_dir() else []
    if not files:
        pytest.skip(f"no report files under {REPORTS_DIR} (set KEMM_SHARED_DATA)")
    csv.field_size_limit(2**31 - 1)
    n_reports, seconds = 0, 0.0
    lines = []
    all_t: list[tuple[str, str]] = []
    all_g: list[tuple[str, str]] = []
    for path in files:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))[:MAX_ROWS_PER_FILE]
        t0 = time.process_time()  # CPU time: the machine may be shared
        reports = [extract_report(r.get("ocr_text") or "") for r in rows]
        seconds += time.process_time() - t0
        n_reports += len(rows)
        t_pairs = [(rep.pT, ft) for rep, r in zip(reports, rows)
                   if rep.pT != NR and (ft := file_t(r.get("stage", "")))]
        g_pairs = [(rep.grade, fg) for rep, r in zip(reports, rows)
                   if rep.grade != NR and (fg := file_grade(r.get("grade", "")))]
        for rep in reports:  # every output is schema-valid JSON
            RefinedReport.model_validate_json(rep.model_dump_json())
        all_t += t_pairs
        all_g += g_pairs
        t_exact = sum(a == b for a, b in t_pairs) / max(len(t_pairs), 1)
        t_num = sum(_t_number(a) == _t_number(b) for a, b in t_pairs) / max(len(t_pairs), 1)
        g_rate = sum(grade_agrees(a, b) for a, b in g_pairs) / max(len(g_pairs), 1)
        lines.append(f"{path.name:16s} rows={len(rows):4d}  T n={len(t_pairs):3d} exact={t_exact:.2f} "
                     f"number={t_num:.2f}  grade n={len(g_pairs):3d} agree={g_rate:.2f}")
        if len(t_pairs) >= 10:
            assert t_num >= 0.6, f"{path.name}: T agreement {t_num:.2f} < 0.6"
        if len(g_pairs) >= 10:
            assert g_rate >= 0.6, f"{path.name}: grade agreement {g_rate:.2f} < 0.6"
    # Pooled over every file: the extractor must find T and grade often and agree with the files' columns.
    t_pooled = sum(_t_number(a) == _t_number(b) for a, b in all_t) / max(len(all_t), 1)
    g_pooled = sum(grade_agrees(a, b) for a, b in all_g) / max(len(all_g), 1)
    print(f"pooled: T n={len(all_t)} number={t_pooled:.3f}  grade n={len(all_g)} agree={g_pooled:.3f}")
    assert len(all_t) >= POOLED_MIN_PAIRS and len(all_g) >= POOLED_MIN_PAIRS, (len(all_t), len(all_g))
    assert t_pooled >= POOLED_MIN_T and g_pooled >= POOLED_MIN_GRADE, (t_pooled, g_pooled)
    print("\nrules extractor vs the files' own stage/grade columns")
    print("\n".join(lines))
    print(f"throughput: {n_reports / max(seconds, 1e-9):.0f} reports/s of CPU time ({n_reports} reports)")


@pytest.mark.realdata
def test_faithful_on_real_reports():
    files = sorted(REPORTS_DIR.glob("*.csv")) if REPORTS_DIR.is_dir() else []
    if not files:
        pytest.skip(f"no report files under {REPORTS_DIR} (set KEMM_SHARED_DATA)")
    csv.field_size_limit(2**31 - 1)
    for path in files:
        with open(path, encoding="utf-8", newline="") as f:
            for r in list(csv.DictReader(f))[:25]:
                assert_faithful(r.get("ocr_text") or "")


# --------------------------------------------------------------------------- backend

def test_backend_registered_and_options():
    assert "rules" in known_backends()
    be = create_backend("rules", model=None, dtype=None)  # CLI passes unset options as None
    assert be.name == "rules"
    with pytest.raises(BackendError, match="takes no options"):
        create_backend("rules", model="some/model")


def test_describe_revision_hashes_extractor_and_table():
    desc = create_backend("rules").describe()
    pkg = resources.files("kemm.knowledge.rules")
    h = hashlib.sha256()
    for name in ("extract.py", "extraction.py", "find_staging.py", "find_tumour.py", "staging.py"):
        h.update(pkg.joinpath(name).read_bytes())
        h.update(b"\0")
    h.update(pkg.joinpath("pbk_curated.yaml").read_bytes())
    assert desc["model_id"] == "kemm-rules"
    assert desc["backend"] == "rules"
    assert desc["model_revision"] == h.hexdigest()
    json.dumps(desc)  # provenance must be JSON-serialisable


def test_backend_refines_reports_in_order():
    be = create_backend("rules")
    reqs = [GenerationRequest(messages=[], inputs={"case_id": f"C{i}", "report_text": t})
            for i, t in enumerate([BLADDER, "nothing here at all, just words"])]
    res = be.generate(reqs, RefinedReport, {})
    assert [r.finish_reason for r in res] == ["stop", "stop"]
    first = RefinedReport.model_validate_json(res[0].text)
    assert first.pT == "T2a" and first.nodes_examined == 14
    assert RefinedReport.model_validate_json(res[1].text).summary == NOTHING_FOUND


def test_backend_errors_are_results_not_exceptions():
    be = create_backend("rules")
    res = be.generate([GenerationRequest(messages=[], inputs={"case_id": "X"})], RefinedReport, {})
    assert res[0].error and "report_text" in res[0].error
    from pydantic import BaseModel

    class Other(BaseModel):
        x: int

    res = be.generate([GenerationRequest(messages=[], inputs={})], Other, {})
    assert res[0].error and "Other" in res[0].error


# --------------------------------------------------------------------------- PBK

REQUIRED_PBK = ["BLCA", "BRCA", "GBMLGG", "LUAD", "LUSC", "UCEC", "KIRC", "HNSC", "COADREAD", "LIHC"]


def test_pbk_table_covers_required_types_and_validates():
    types = pbk_cancer_types()
    assert set(REQUIRED_PBK) <= set(types)
    for ct, entry in load_pbk_table().items():
        pk = PrognosticKnowledge.model_validate({"cancer_type": ct, **entry})
        assert 6 <= len(pk.prognostic_factors) <= 12, ct
        names = [f.name.lower() for f in pk.prognostic_factors]
        assert len(names) == len(set(names)), f"{ct}: duplicate factor names"
        assert len(pk.statements()) == len(pk.prognostic_factors) + 3


# Every TCGA study code (the 33 projects of the GDC's TCGA program) plus the combined cohorts
# GBMLGG and COADREAD that MCAT/PORPOISE/SurvPath use.
TCGA_STUDIES = ["ACC", "BLCA", "BRCA", "CESC", "CHOL", "COAD", "DLBC", "ESCA", "GBM", "HNSC", "KICH", "KIRC", "KIRP",
                "LAML", "LGG", "LIHC", "LUAD", "LUSC", "MESO", "OV", "PAAD", "PCPG", "PRAD", "READ", "SARC", "SKCM",
                "STAD", "TGCT", "THCA", "THYM", "UCEC", "UCS", "UVM"]
REQUIRED_PBK_ALL = sorted([*TCGA_STUDIES, "GBMLGG", "COADREAD"])


def test_pbk_through_repair_loop():
    be = create_backend("rules")
    reqs = [GenerationRequest(messages=[], inputs={"cancer_type": ct, "cancer_name": ""})
            for ct in [*REQUIRED_PBK, "gbmlgg", "NOPE"]]
    outs = generate_validated(be, reqs, PrognosticKnowledge, {}, max_attempts=2)
    assert [o.status for o in outs] == ["ok"] * (len(REQUIRED_PBK) + 1) + ["failed"]
    assert outs[0].output["cancer_type"] == "BLCA"
    assert outs[-2].output["cancer_type"] == "GBMLGG"  # case-insensitive lookup
    gbm = {f["name"] for f in outs[REQUIRED_PBK.index("GBMLGG")].output["prognostic_factors"]}
    assert {"IDH mutation", "1p/19q codeletion", "MGMT promoter methylation"} <= gbm
    failed = outs[-1]
    why = ("backend error: no curated prognostic knowledge for cancer type 'NOPE'; known types: "
           + ", ".join(REQUIRED_PBK_ALL) + " (add an entry to kemm/knowledge/rules/pbk_curated.yaml or use an LLM backend)")
    assert failed.output is None and failed.attempts == 2
    assert failed.errors == [f"attempt 1: {why}", f"attempt 2: {why}"]


def test_pbk_data_file_ships_with_package():
    path = Path(str(resources.files("kemm.knowledge.rules").joinpath("pbk_curated.yaml")))
    table = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = {ct: e for ct, e in table.items() if not ct.startswith("_")}
    assert sorted([*entries, *table["_aliases"]]) == REQUIRED_PBK_ALL == pbk_cancer_types()
    for ct in entries:
        assert PrognosticKnowledge.model_validate(pbk_raw(ct)).cancer_type == ct
    pyproject = (Path(__file__).resolve().parents[3] / "pyproject.toml").read_text(encoding="utf-8")
    assert '"kemm.knowledge.rules" = ["*.yaml"]' in pyproject  # shipped in the wheel, not only in a checkout


def test_every_curated_factor_cites_the_literature_and_every_study_code_is_served():
    """issue 12: every TCGA study code has curated PBK, each factor with at least one resolvable reference."""
    path = Path(str(resources.files("kemm.knowledge.rules").joinpath("pbk_curated.yaml")))
    table = yaml.safe_load(path.read_text(encoding="utf-8"))
    refs = table["_references"]
    cited = set()
    for ct, entry in table.items():
        if ct.startswith("_"):
            continue
        for f in entry["prognostic_factors"]:
            assert f.get("refs"), f"{ct}: factor {f['name']!r} cites nothing"
            assert set(f["refs"]) <= set(refs), f"{ct}: {f['name']!r} cites unknown keys {set(f['refs']) - set(refs)}"
            cited |= set(f["refs"])
    assert cited == set(refs), f"references never cited: {set(refs) - cited}"
    assert set(TCGA_STUDIES) <= set(pbk_cancer_types())
    for alias, target in table["_aliases"].items():
        assert pbk_raw(alias)["prognostic_factors"] == pbk_raw(target)["prognostic_factors"]
        assert pbk_raw(alias)["cancer_type"] == alias
    assert "refs" not in json.dumps(pbk_raw("KIRP"))  # the backend's output is the schema, nothing more
    assert pbk_references("KIRP")["type 2 papillary morphology"][0].startswith("Delahunt B, Eble JN.")
    assert pbk_references("GBM") == pbk_references("GBMLGG")
