"""Import outputs another LLM already produced as a kemm knowledge source.

Formats:

- ``tcga-path-report`` — the tcga-path-report CSVs: ``llm_output`` holds six
  fields (site, laterality, histology, stage, grade, behavior) as lines such as
  ``4. "Stage": T2N0Mx. Justified as ...`` or ``Stage: T2 N0 MX`` followed by
  ``Justification: ...``.  They are mapped onto :class:`RefinedReport`
  (histology -> histologic_type, the TNM string -> pT/pN/pM, "Stage II" ->
  stage_group, grade -> Grade; site, laterality and behavior become key
  statements; everything else "not reported").  The source report for the
  audit is the ``ocr_text`` of the same row, recorded as ``input_meta.file`` +
  ``row``.
- ``jsonl`` — one JSON object per line: ``case_id`` plus the RefinedReport
  fields; an optional ``report_text`` (or ``--text-key``) carries the source
  report text so that the audit can check it.

Provenance: backend ``import``, model as declared (``--model-name``, default
"unknown (as published)"), prompt identity ``import:<format>``, the import
file's sha256.  Rows that do not parse or validate become failure records with
their raw text and errors — never silent drops.  Several rows of one patient:
the first that parses is kept, and the count is recorded.
"""
from __future__ import annotations

from kemm.knowledge.errors import KnowledgeError

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kemm.knowledge.cache import SourceCache, now_iso, record_key, sha256_text
from kemm.knowledge.inputs import DEFAULT_ID_COLUMN, _TCGA_BARCODE, _read_rows
from kemm.knowledge.schemas import NOT_REPORTED, RefinedReport, schema_sha

FORMATS = ("tcga-path-report", "jsonl")
DEFAULT_MODEL_NAME = "unknown (as published)"
TCGA_FIELDS = ("site", "laterality", "histology", "stage", "grade", "behavior")


class ImportError_(KnowledgeError):
    """An import file that cannot be read at all (rows that fail are records, not errors)."""


@dataclass
class ImportSummary:
    source: str
    format: str
    rows: int = 0
    cases: int = 0
    ok: int = 0
    failed: int = 0
    written: int = 0
    unchanged: int = 0
    patients_with_several_rows: int = 0
    file_sha256: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def parse_rate(self) -> float:
        return self.ok / (self.ok + self.failed) if (self.ok + self.failed) else 0.0


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_identity(fmt: str, model_name: str) -> dict[str, Any]:
    return {
        "task": "refine_report",
        "prompt_name": f"import:{fmt}",
        "prompt_version": None,
        "prompt_sha": f"import:{fmt}",
        "schema_name": "RefinedReport",
        "schema_sha": schema_sha(RefinedReport),
        "backend": "import",
        "model_id": model_name,
        "model_revision": None,
        "sampling": None,
    }


# --------------------------------------------------------------------------- tcga llm_output parsing
_FIELD_LINE = re.compile(
    r"""(?imx)^[ \t>*\-•]*                      # bullets, markdown
    (?:(?:\d{1,2}|[A-F])[.)][ \t]*)?             # "1." "A."
    [*_"'“”]*[ \t]*(?P<f>site|laterality|histology|stage|grade|behaviou?r)[ \t]*[*_"'“”]*   # "Site" **Site**
    [ \t]*(?:\([^)\n]{0,60}\))?[ \t]*            # "Stage (TNM)"
    [*_"'“”]*[ \t]*[:\-–][ \t]*[*_"'“”]*[ \t]*
    (?P<v>[^\n]*)$"""
)
_CHOICE = re.compile(r"(?im)^[ \t]*category[ \t]*:[ \t]*(?P<f>site|laterality|histology|stage|grade|behaviou?r)[ \t]*\n[ \t]*(?:choice|value|answer)[ \t]*:[ \t]*(?P<v>[^\n]*)$")
_INLINE = re.compile(r"(?i)\b(?P<f>site|laterality|histology|stage|grade|behaviou?r)\s*:\s*(?P<v>[^,;\n]+)")
_CUT = re.compile(
    r"(?i)(?:\.?\s+|\s*[,;(]\s*|^)(?:justified\s+(?:as|by)|justification\s*:|justification\b|reason(?:ing)?\s*:|"
    r"explanation\s*:|because\b|as (?:the|per|stated|indicated|mentioned|it|there|this|no|specified|described)\b|"
    r"based on\b|since\b|which (?:is|are|indicates|suggests|means)\b|this is\b)"
    r"|,\s*(?=(?:laterality|histology|stage|grade|behaviou?r)\s*:)"  # several fields on one line
    r"|\s+[-–—]\s+|\.\s+(?=[A-Z\"“(])"  # "bladder - The report ...", "Grade II. The tumour ..."
)
_LEAD = re.compile(
    r"(?i)^(?:the\s+)?(?:(?:site|laterality|histology|histologic(?:al)? type|stage|grade|behaviou?r)"
    r"(?:\s+of\s+(?:the\s+)?(?:tumou?rs?|cancers?|lesions?|neoplasms?|carcinoma))?|tumou?rs?|cancer|lesion)\s+(?:is|are|was|appears to be)\s+(?:an?\s+|the\s+)?"
)
_PROSE_NOT = re.compile(
    r"(?i)^(?:the|this|there|it|information|unable|insufficient|cannot|no)\b.*\b(?:not\s+(?:\w+\s+)?(?:provided|mentioned|specified|"
    r"reported|stated|available|given|determined|described|possible)|cannot be|unable to|insufficient)\b"
)
NOT_PROVIDED = re.compile(
    r"(?i)^\W*(not\s+(?:explicitly\s+|specifically\s+|clearly\s+|fully\s+)?(able|provided|applicable|available|specified|reported|stated|mentioned|given|determined|assessable|documented|clear)|"
    r"n/?a|none|unknown|cannot be determined|undetermined|no information|insufficient|not enough|information not|unavailable|-)\b"
)


def parse_tcga_llm_output(text: str) -> tuple[dict[str, str], list[str]]:
    """The six fields of one ``llm_output`` text, as short values (the first line
    of each field, cut before its justification).  Returns (fields, problems)."""
    vals: dict[str, str] = {}
    problems: list[str] = []
    obj = _try_json(text)
    if obj:
        for f in TCGA_FIELDS:
            v = obj.get(f) or obj.get(f.capitalize())
            if isinstance(v, dict):
                v = v.get("value") or v.get("choice") or next((x for x in v.values() if isinstance(x, str)), None)
            if isinstance(v, (str, int, float)):
                vals[f] = str(v)
    for m in list(_CHOICE.finditer(text)) + list(_FIELD_LINE.finditer(text)):
        f = m.group("f").lower().replace("behaviour", "behavior")
        if f in vals:
            continue
        v = m.group("v").strip()
        if not v:  # value on the next line ("Stage:\n T2 N0")
            nxt = text[m.end():].lstrip("\n").split("\n", 1)[0].strip()
            if nxt and not _FIELD_LINE.match(nxt) and not re.match(r"(?i)justification", nxt):
                v = nxt
        vals[f] = v
    if len(vals) < len(TCGA_FIELDS):  # "B. Site: Omentum, Laterality: Not provided, Histology: ..." on one line
        for m in _INLINE.finditer(text):
            f = m.group("f").lower().replace("behaviour", "behavior")
            vals.setdefault(f, m.group("v"))
    out: dict[str, str] = {}
    for f in TCGA_FIELDS:
        if f not in vals:
            problems.append(f"field {f!r} not found")
            continue
        out[f] = clean_value(vals[f])
    return out, problems


def _try_json(text: str) -> dict[str, Any] | None:
    s = text.strip()
    if not s.startswith("{") and "```" not in s[:20]:
        return None
    s = re.sub(r"^```(?:json)?\s*|\s*```$", "", s)
    try:
        obj = json.loads(s, strict=False)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def clean_value(v: str) -> str:
    """``'Bladder. Justified as the report ...'`` -> ``'Bladder'``; not provided -> "not reported"."""
    v = v.strip().strip('"').strip()
    if _PROSE_NOT.match(v):
        return NOT_REPORTED
    v = _LEAD.sub("", v)
    m = _CUT.search(v)
    if m and m.start() > 0:
        v = v[: m.start()]
    elif m and m.start() == 0:
        v = ""
    v = re.sub(r"\s*\([^)]*$", "", v)  # an unclosed parenthesis left by the cut
    v = re.sub(r"\s*\((?:[^()\s]+\s+){4,}[^()]*\)", "", v)  # long parenthetical explanations
    v = v.strip().rstrip(".,;:").strip().strip('"*').strip()
    if not v or NOT_PROVIDED.match(v):
        return NOT_REPORTED
    return v[:280]


# Preceded by no letter, except the end of a previous category ("T1aN0M0", "TisN0", "TxN0").
_TNM_IN = re.compile(r"(?<![e-rt-wyzE-RT-WYZ])(?:y|r)?[pc]?\s?([TNM])\s?(is|a|X|x|[0-4O](?:[a-d][1-3]?)?)(?![0-9a-z])")
_STAGE_GROUP_IN = re.compile(r"(?i)(?:^|stage\s*(?:group(?:ing)?)?\s*:?\s*)(IV|III|II|I|0)([ABC][1-3]?)?(?![A-Za-z0-9])")
_GRADE_NUM = re.compile(r"(?i)(?:grade|\bG)\s*[:\-]?\s*(IV|III|II|I|[1-4])(?![A-Za-z0-9])|^\s*(IV|III|II|I|[1-4])(?:\s*(?:/|of|out of)\s*[34])?\s*(?:\(|$|,)")
_GRADE_WORDS = [
    (re.compile(r"(?i)\bhigh[\s-]*grade|\bgrade\s*:?\s*high"), "high grade"),
    (re.compile(r"(?i)\blow[\s-]*grade|\bgrade\s*:?\s*low"), "low grade"),
    (re.compile(r"(?i)\bundifferentiated|\banaplastic"), "G4"),
    (re.compile(r"(?i)\bpoorly[\s-]*differentiated"), "G3"),
    (re.compile(r"(?i)\bmoderately[\s-]*differentiated"), "G2"),
    (re.compile(r"(?i)\bwell[\s-]*differentiated"), "G1"),
]
_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4}
_PT = re.compile(r"^T(X|0|is|a|[1-4][a-d]?[1-3]?)$")  # as schemas.PT
_PN = re.compile(r"^N(X|0|[1-3][a-c]?)$")
_PM = re.compile(r"^M(X|0|1[a-d]?)$")


def parse_tnm(stage: str) -> dict[str, str]:
    """First T, N and M category of a stage string ('pT2b pN2 RO' -> T2b, N2)."""
    out = {"pT": NOT_REPORTED, "pN": NOT_REPORTED, "pM": NOT_REPORTED}
    if stage == NOT_REPORTED:
        return out
    pats = {"T": ("pT", _PT), "N": ("pN", _PN), "M": ("pM", _PM)}
    for m in _TNM_IN.finditer(stage):
        letter = m.group(1).upper()
        v = m.group(2)
        v = "is" if v.lower() == "is" else ("X" if v.lower() == "x" else v[0].upper().replace("O", "0") + v[1:].lower())
        if v == "A":
            v = "a"
        fld, rx = pats[letter]
        if out[fld] == NOT_REPORTED and rx.match(letter + v):
            out[fld] = letter + v
    return out


def parse_stage_group(stage: str) -> str:
    if stage == NOT_REPORTED:
        return NOT_REPORTED
    m = _STAGE_GROUP_IN.search(stage.strip())
    if not m:
        return NOT_REPORTED
    return m.group(1).upper() + (m.group(2) or "").upper()


def parse_grade(grade: str) -> str:
    if grade == NOT_REPORTED:
        return NOT_REPORTED
    hits: list[tuple[int, str]] = []
    for m in _GRADE_NUM.finditer(grade):
        g = (m.group(1) or m.group(2)).upper()
        hits.append((m.start(), f"G{_ROMAN.get(g, g)}"))
        break
    for rx, val in _GRADE_WORDS:
        m = rx.search(grade)
        if m:
            hits.append((m.start(), val))
    if not hits:
        return NOT_REPORTED
    return min(hits)[1]


def tcga_fields_to_report(fields: dict[str, str]) -> dict[str, Any]:
    """Map the six tcga-path-report fields onto a RefinedReport dict (not yet validated)."""
    hist = fields.get("histology", NOT_REPORTED)
    stage = fields.get("stage", NOT_REPORTED)
    grade = fields.get("grade", NOT_REPORTED)
    d: dict[str, Any] = {
        "histologic_type": hist[:300] if hist else NOT_REPORTED,
        "grade": parse_grade(grade),
        **parse_tnm(stage),
        "stage_group": parse_stage_group(stage),
        "tumor_size": NOT_REPORTED,
        "nodes_positive": NOT_REPORTED,
        "nodes_examined": NOT_REPORTED,
        "margin_status": NOT_REPORTED,
        "lymphovascular_invasion": NOT_REPORTED,
        "perineural_invasion": NOT_REPORTED,
    }
    statements = []
    for f in TCGA_FIELDS:
        v = fields.get(f, NOT_REPORTED)
        if v != NOT_REPORTED:
            statements.append(f"{f.capitalize()}: {v}."[:300])
    d["key_statements"] = [s for s in statements if len(s) >= 3][:8]
    d["summary"] = compose_summary(fields)[:600]
    return d


def compose_summary(fields: dict[str, str]) -> str:
    g = lambda k: fields.get(k, NOT_REPORTED)  # noqa: E731
    parts = []
    hist, site, lat = g("histology"), g("site"), g("laterality")
    head = hist if hist != NOT_REPORTED else "Tumour of unreported histology"
    if site != NOT_REPORTED:
        head += f" of the {site}" if hist != NOT_REPORTED else f" at {site}"
    if lat != NOT_REPORTED:
        head += f" ({lat.lower()})"
    parts.append(head)
    if g("stage") != NOT_REPORTED:
        parts.append(f"stage {g('stage')}")
    if g("grade") != NOT_REPORTED:
        parts.append(f"grade {g('grade')}")
    if g("behavior") != NOT_REPORTED:
        parts.append(g("behavior").lower())
    s = ", ".join(parts) + "."
    return s[0].upper() + s[1:]


# --------------------------------------------------------------------------- import
def _validate(d: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    try:
        return RefinedReport.model_validate(d).model_dump(mode="json"), []
    except ValidationError as e:
        return None, [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]


def _parse_tcga_row(row: dict[str, Any], llm_column: str) -> tuple[dict[str, Any] | None, list[str]]:
    raw = str(row.get(llm_column) or "")
    if not raw.strip():
        return None, [f"empty {llm_column!r}"]
    fields, problems = parse_tcga_llm_output(raw)
    if len(problems) == len(TCGA_FIELDS):
        return None, ["no 'Site/Laterality/Histology/Stage/Grade/Behavior' lines found in the LLM output"]
    out, errs = _validate(tcga_fields_to_report(fields))
    if out is None:
        return None, problems + errs
    return out, problems  # some fields missing is still a parse: they stay "not reported"


def import_file(
    path: Path | str,
    fmt: str,
    source: str,
    cache_dir: Path | str,
    model_name: str = DEFAULT_MODEL_NAME,
    id_column: str = DEFAULT_ID_COLUMN,
    text_column: str = "ocr_text",
    llm_column: str = "llm_output",
    text_key: str = "report_text",
) -> ImportSummary:
    path = Path(path)
    if fmt not in FORMATS:
        raise ImportError_(f"unknown import format {fmt!r}; formats: {', '.join(FORMATS)}")
    if not path.is_file():
        raise ImportError_(f"{path}: no such file")
    sha = file_sha256(path)
    summary = ImportSummary(source=source, format=fmt, file_sha256=sha)
    identity = import_identity(fmt, model_name)
    sc = SourceCache(cache_dir, source)
    sc.ensure_identity(identity, {"import_file": str(path), "import_sha256": sha, "import_format": fmt,
                                  "declared_model": model_name})
    records = _tcga_records(path, id_column, text_column, llm_column, summary) if fmt == "tcga-path-report" \
        else _jsonl_records(path, text_key, summary)
    for r in records:
        r["key"] = record_key(identity, canonical_input(r))
        r["input_meta"]["import_sha256"] = sha
    existing = sc.load().records
    with sc.writer() as w:
        for r in records:
            summary.cases += 1
            summary.ok += r["status"] == "ok"
            if r["status"] == "failed":
                summary.failed += 1
                summary.failures.append(r["case_id"])
            old = existing.get(r["key"])
            if old is not None and old.get("status") == r["status"] and old.get("output") == r["output"]:
                summary.unchanged += 1
                continue
            w.append(r)
            summary.written += 1
    sc.update_counts({"last_import": {"at": now_iso(), "file": str(path), "sha256": sha, "rows": summary.rows,
                                      "ok": summary.ok, "failed": summary.failed,
                                      "patients_with_several_rows": summary.patients_with_several_rows}})
    return summary


def canonical_input(rec: dict[str, Any]) -> str:
    """What the key hashes: the imported raw text and the source text's sha."""
    return json.dumps({"raw": rec.get("raw_output"), "input_sha": rec.get("input_sha"), "case": rec["case_id"]}, sort_keys=True)


def _base_record(case_id: str, status: str, raw: str, output: Any, errors: list[str], meta: dict[str, Any],
                 input_sha: str | None) -> dict[str, Any]:
    return {
        "key": "",
        "case_id": case_id,
        "status": status,
        "input_sha": input_sha,
        "rendered_prompt_sha": None,
        "raw_output": raw,
        "output": output,
        "errors": errors,
        "attempts": 1,
        "finish_reason": "imported",
        "latency_s": 0.0,
        "input_meta": meta,
        "created": now_iso(),
    }


def _tcga_records(path: Path, id_column: str, text_column: str, llm_column: str, summary: ImportSummary) -> list[dict[str, Any]]:
    rows = _read_rows(path)
    if not rows:
        raise ImportError_(f"{path}: no rows")
    for col in (id_column, llm_column):
        if col not in rows[0]:
            raise ImportError_(f"{path}: no column {col!r}; columns are {list(rows[0])[:12]} (use --id-column / --llm-column)")
    summary.rows = len(rows)
    by_case: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        raw_id = str(row.get(id_column) or "").strip()
        cid = raw_id[:12] if id_column == DEFAULT_ID_COLUMN else raw_id
        if not cid or (id_column == DEFAULT_ID_COLUMN and not _TCGA_BARCODE.match(cid)):
            cid = f"row-{i + 2}"  # kept as a failure below, never dropped
        by_case.setdefault(cid, []).append(i)
    out = []
    for cid, idxs in by_case.items():
        if len(idxs) > 1:
            summary.patients_with_several_rows += 1
        chosen, errs_all = None, []
        for i in idxs:
            parsed, errs = _parse_tcga_row(rows[i], llm_column)
            if parsed is not None:
                chosen = (i, parsed, errs)
                break
            errs_all += [f"row {i + 2}: {e}" for e in errs]
        i = chosen[0] if chosen else idxs[0]
        src = str(rows[i].get(text_column) or "").strip() if text_column in rows[i] else ""
        meta = {"file": str(path), "row": i, "csv_line_row": i + 2, "id_column": id_column, "text_column": text_column,
                "n_rows_for_case": len(idxs), "format": "tcga-path-report"}
        raw = str(rows[i].get(llm_column) or "")
        if cid.startswith("row-"):
            out.append(_base_record(cid, "failed", raw, None, [f"row {i + 2}: {id_column!r} is not a TCGA patient barcode"],
                                    meta, sha256_text(src)))
        elif chosen:
            _, parsed, warn = chosen
            meta["missing_fields"] = warn
            rec = _base_record(cid, "ok", raw, parsed, [], meta, sha256_text(src))
            if any("'behavior'" in w for w in warn):
                rec["finish_reason"] = "truncated"  # the published text stops before its last field
            out.append(rec)
        else:
            out.append(_base_record(cid, "failed", raw, None, errs_all, meta, sha256_text(src)))
    return out


def _jsonl_records(path: Path, text_key: str, summary: ImportSummary) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            summary.rows += 1
            meta = {"file": str(path), "line": ln, "format": "jsonl", "text_key": text_key}
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            except (json.JSONDecodeError, ValueError) as e:
                out.append(_base_record(f"line-{ln}", "failed", line.rstrip("\n"), None,
                                        [f"line {ln}: not a JSON object ({e})"], meta, None))
                continue
            cid = str(obj.get("case_id") or "").strip()
            if not cid:
                out.append(_base_record(f"line-{ln}", "failed", line.rstrip("\n"), None,
                                        [f"line {ln}: no 'case_id'"], meta, None))
                continue
            if cid in seen:
                summary.patients_with_several_rows += 1
                continue  # the first line of a case wins, as for CSV rows
            seen[cid] = ln
            src = obj.get(text_key)
            meta["source_text"] = "present" if src else "absent"
            fields = {k: v for k, v in obj.items() if k not in ("case_id", text_key)}
            parsed, errs = _validate(fields)
            sha = sha256_text(str(src).strip()) if src else None
            if src:
                meta["report_text"] = str(src)  # no other copy of the source exists for a JSONL import
            out.append(_base_record(cid, "ok" if parsed else "failed", line.rstrip("\n"), parsed,
                                    [f"line {ln}: {e}" for e in errs], meta, sha))
    return out
