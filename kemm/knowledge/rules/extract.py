"""Deterministic, LLM-free extraction of a ``RefinedReport`` from pathology report text.

The extractor reads OCR'd surgical pathology reports (the tcga-path-report
files) and fills every field it can find stated in the text; everything else is
``"not reported"``.  It never infers a value the report does not state: codes
are normalised (``pTla`` -> ``T1a``, ``pNO`` -> ``N0``, ``grade III`` -> ``G3``),
never derived from other findings (a Gleason score is not turned into a G grade,
a glioblastoma is not given WHO grade IV unless the report says so).

Every field keeps the verbatim snippet it came from (``Extraction.evidence``), so
an audit can check that each number and code is supported by the source.

Choices made where reports are ambiguous, kept simple and defensible:

- **T/N/M**: staging-context matches (after "stage", "TNM", "(pT)") beat other
  ``pT`` tokens, which beat unprefixed ``T3 N1`` strings; earliest wins within a
  class (the final diagnosis precedes comments and addenda).
- **Grade**: most specific system first (FIGO / WHO / Nottingham / Fuhrman /
  "histologic grade:"), then "grade N" and G codes next to the word grade, then
  differentiation words, then "high/low grade" (not PIN, dysplasia or SIL).
  Gleason patterns and scores are never read as a grade.
- **Nodes**: an explicit total (``Number of lymph nodes examined: 14``,
  ``pN0 (0/37)``, ``Total nodes = 2``) wins; otherwise the per-station counts
  (``(0/7)``, ``three of nine lymph nodes``) are summed, a count repeated right
  next to itself (``1 of 3 lymph nodes (1/3)``) counted once.
- **Margins**: any positive mention -> positive, else any close -> close, else
  negative; ``R0``/``R1`` residual codes count too.
"""
from __future__ import annotations

from typing import Any

from kemm.knowledge.generate.schemas import RefinedReport
from kemm.knowledge.rules.extraction import NR, WS, Extraction
from kemm.knowledge.rules.find_staging import extract_gleason, extract_grade, extract_stage, extract_tnm
from kemm.knowledge.rules.find_tumour import (
    LVI_RE,
    PNI_RE,
    extract_histology,
    extract_margins,
    extract_nodes,
    extract_size,
    presence,
)

NOTHING_FOUND = "No prognostic findings were extracted from the report."
# The files whose bytes make the rules backend's model revision (editing one changes every key).
EXTRACTOR_FILES = ("extract.py", "extraction.py", "find_staging.py", "find_tumour.py", "staging.py")

__all__ = ["NOTHING_FOUND", "Extraction", "extract", "extract_report", "to_report"]


# --------------------------------------------------------------------------- statements


def _stage_string(ex: Extraction) -> str:
    parts = []
    if ex.pT != NR:
        parts.append(("yp" if ex.t_prefix == "y" else "p") + ex.pT)
    if ex.pN != NR:
        parts.append(ex.pN)
    if ex.pM != NR:
        parts.append(ex.pM)
    return " ".join(parts)


def _statements(ex: Extraction) -> list[str]:
    out: list[str] = []
    if ex.histologic_type != NR:
        s = ex.histologic_type[0].upper() + ex.histologic_type[1:]
        if ex.grade_phrase:
            s += f", {ex.grade_phrase}"
        out.append(s + ".")
    elif ex.grade_phrase:
        out.append(f"Tumour grade: {ex.grade_phrase}.")
    tnm = _stage_string(ex)
    if tnm and ex.stage_group != NR:
        out.append(f"Pathologic stage {tnm} (stage {ex.stage_group}).")
    elif tnm:
        out.append(f"Pathologic stage {tnm}.")
    elif ex.stage_group != NR:
        out.append(f"Stage {ex.stage_group}.")
    if ex.tumor_size != NR:
        out.append(f"Tumour size {ex.tumor_size} in greatest dimension.")
    if isinstance(ex.nodes_positive, int) and isinstance(ex.nodes_examined, int):
        out.append(f"{ex.nodes_positive} of {ex.nodes_examined} lymph nodes positive.")
    elif isinstance(ex.nodes_examined, int):
        out.append(f"{ex.nodes_examined} lymph nodes examined.")
    elif isinstance(ex.nodes_positive, int):
        out.append(f"{ex.nodes_positive} positive lymph nodes.")
    if ex.margin_status != NR:
        out.append(f"Margins {ex.margin_status}.")
    for label, v in (("Lymphovascular invasion", ex.lymphovascular_invasion), ("Perineural invasion", ex.perineural_invasion)):
        if v == "present":
            out.append(f"{label} present.")
        elif v == "absent":
            out.append(f"No {label.lower()}.")
    if ex.gleason:
        out.append(ex.gleason + ".")
    return out[:8]


def _summary(ex: Extraction) -> str:
    bits: list[str] = []
    if ex.histologic_type != NR:
        bits.append(ex.histologic_type[0].upper() + ex.histologic_type[1:])
    if ex.grade_phrase:
        bits.append(ex.grade_phrase)
    if ex.gleason:
        bits.append(ex.gleason)
    tnm = _stage_string(ex)
    if tnm:
        bits.append(("pathologic stage " if not bits else "") + tnm)
    if ex.stage_group != NR:
        bits.append(f"stage {ex.stage_group}")
    if ex.tumor_size != NR:
        bits.append(f"tumour size {ex.tumor_size}")
    if isinstance(ex.nodes_positive, int) and isinstance(ex.nodes_examined, int):
        bits.append(f"{ex.nodes_positive}/{ex.nodes_examined} lymph nodes positive")
    if ex.margin_status != NR:
        bits.append(f"margins {ex.margin_status}")
    if ex.lymphovascular_invasion != NR:
        bits.append(f"lymphovascular invasion {ex.lymphovascular_invasion}")
    if ex.perineural_invasion != NR:
        bits.append(f"perineural invasion {ex.perineural_invasion}")
    if not bits:
        return NOTHING_FOUND
    s = ", ".join(bits) + "."
    return s[0].upper() + s[1:]


# --------------------------------------------------------------------------- entry points


def extract(text: str) -> Extraction:
    """All fields with their evidence; ``extract_report`` wraps this into the schema."""
    flat = WS.sub(" ", text or "")
    low = flat.lower()  # same length and offsets as ``flat``; most patterns run on it
    if len(low) != len(flat):  # a few code points change length when lower-cased
        low = "".join(c.lower() if len(c.lower()) == 1 else c for c in flat)
    ex = Extraction()
    extract_tnm(flat, ex)
    extract_stage(flat, ex)
    extract_grade(flat, low, ex)
    extract_gleason(flat, low, ex)
    extract_histology(flat, low, ex)
    extract_size(flat, low, ex)
    extract_nodes(flat, low, ex)
    extract_margins(flat, low, ex)
    ex.lymphovascular_invasion = presence(flat, low, LVI_RE, "lymphovascular_invasion", ex)
    ex.perineural_invasion = presence(flat, low, PNI_RE, "perineural_invasion", ex)
    return ex


def to_report(ex: Extraction) -> RefinedReport:
    data: dict[str, Any] = {
        "histologic_type": ex.histologic_type,
        "grade": ex.grade,
        "pT": ex.pT,
        "pN": ex.pN,
        "pM": ex.pM,
        "stage_group": ex.stage_group,
        "tumor_size": ex.tumor_size,
        "nodes_positive": ex.nodes_positive,
        "nodes_examined": ex.nodes_examined,
        "margin_status": ex.margin_status,
        "lymphovascular_invasion": ex.lymphovascular_invasion,
        "perineural_invasion": ex.perineural_invasion,
        "key_statements": _statements(ex),
        "summary": _summary(ex)[:600],
    }
    return RefinedReport.model_validate(data)


def extract_report(text: str) -> RefinedReport:
    """Fill a ``RefinedReport`` from report text, deterministically."""
    return to_report(extract(text))

