"""Parse the ``llm_output`` texts of the tcga-path-report files into RefinedReport fields.

``llm_output`` holds six fields (site, laterality, histology, stage, grade, behavior) as
lines such as ``4. "Stage": T2N0Mx. Justified as ...`` or ``Stage: T2 N0 MX`` followed
by ``Justification: ...``, or as JSON. Each value is cut before its justification, then
mapped onto :class:`RefinedReport` (the TNM string -> pT/pN/pM, "Stage II" ->
stage_group, grade -> Grade; site, laterality and behavior become key statements).
Codes are read leniently here (published text) and kept only when they match the schema
codes of :mod:`kemm.knowledge.rules.staging`.

Imports: ``generate.schemas`` and ``rules.staging`` only.
"""
from __future__ import annotations

import json
import re
from typing import Any

from kemm.knowledge.generate.schemas import NOT_REPORTED
from kemm.knowledge.rules.staging import (
    DIFFERENTIATION_GRADE,
    ROMAN_ALTERNATION,
    TNM_CODE_RE,
    TNM_FIELDS,
    grade_code,
    roman_or_int,
)

TCGA_FIELDS = ("site", "laterality", "histology", "stage", "grade", "behavior")

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
_STAGE_GROUP_IN = re.compile(r"(?i)(?:^|stage\s*(?:group(?:ing)?)?\s*:?\s*)(" + ROMAN_ALTERNATION + r"|0)([ABC][1-3]?)?(?![A-Za-z0-9])")
_GRADE_NUM = re.compile(
    rf"(?i)(?:grade|\bG)\s*[:\-]?\s*({ROMAN_ALTERNATION}|[1-4])(?![A-Za-z0-9])"
    rf"|^\s*({ROMAN_ALTERNATION}|[1-4])(?:\s*(?:/|of|out of)\s*[34])?\s*(?:\(|$|,)"
)
_GRADE_WORDS = [
    (re.compile(r"(?i)\bhigh[\s-]*grade|\bgrade\s*:?\s*high"), "high grade"),
    (re.compile(r"(?i)\blow[\s-]*grade|\bgrade\s*:?\s*low"), "low grade"),
    (re.compile(r"(?i)\bundifferentiated|\banaplastic"), grade_code(DIFFERENTIATION_GRADE["un"])),
    (re.compile(r"(?i)\bpoorly[\s-]*differentiated"), grade_code(DIFFERENTIATION_GRADE["poorly"])),
    (re.compile(r"(?i)\bmoderately[\s-]*differentiated"), grade_code(DIFFERENTIATION_GRADE["moderately"])),
    (re.compile(r"(?i)\bwell[\s-]*differentiated"), grade_code(DIFFERENTIATION_GRADE["well"])),
]


def parse_tnm(stage: str) -> dict[str, str]:
    """First T, N and M category of a stage string ('pT2b pN2 RO' -> T2b, N2)."""
    out = {"pT": NOT_REPORTED, "pN": NOT_REPORTED, "pM": NOT_REPORTED}
    if stage == NOT_REPORTED:
        return out
    for m in _TNM_IN.finditer(stage):
        letter = m.group(1).upper()
        v = m.group(2)
        v = "is" if v.lower() == "is" else ("X" if v.lower() == "x" else v[0].upper().replace("O", "0") + v[1:].lower())
        if v == "A":
            v = "a"
        fld = TNM_FIELDS[letter]
        if out[fld] == NOT_REPORTED and TNM_CODE_RE[letter].match(letter + v):
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
        hits.append((m.start(), grade_code(roman_or_int(g))))
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
