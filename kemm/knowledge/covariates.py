"""Numeric covariates from validated refined reports (stage, grade, pT/pN/pM, nodes, size, ...).

The knowledge half owns the meaning of its fields: this module turns a ``RefinedReport``
output into numbers ("not reported" -> NaN) for classical models. The model half reads
them through ``kemm.knowledge.report_covariates`` and never parses knowledge strings.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from kemm.knowledge.api import read_outputs

REPORT_COVARIATES = ("stage", "grade", "pT", "pN", "pM", "nodes_positive", "nodes_examined", "tumor_size", "margin", "lvi", "pni")
_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4}


def _stage(v: str) -> float:
    m = re.match(r"^(0|IV|III|II|I)", str(v))
    if not m:
        return np.nan
    return 0.0 if m.group(1) == "0" else float(_ROMAN[m.group(1)])


def _grade(v: str) -> float:
    v = str(v)
    if v.startswith("G") and v[1:].isdigit():
        return float(v[1:])
    return {"low grade": 1.0, "high grade": 3.0}.get(v, np.nan)


def _tnm(v: str, letter: str) -> float:
    m = re.match(rf"^{letter}(is|a|X|\d)", str(v))
    if not m or m.group(1) == "X":
        return np.nan
    return 0.0 if m.group(1) in ("is", "a") else float(m.group(1))


def _size_cm(v: str) -> float:
    m = re.match(r"^([0-9.]+) (cm|mm)$", str(v))
    if not m:
        return np.nan
    x = float(m.group(1))
    return x / 10 if m.group(2) == "mm" else x


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan


_PRESENCE = {"present": 1.0, "absent": 0.0}
_MARGIN = {"positive": 1.0, "close": 0.5, "negative": 0.0}


def encode_report(out: dict) -> dict[str, float]:
    """Numeric covariates from a ``RefinedReport`` output dict (missing -> NaN)."""
    return {
        "stage": _stage(out.get("stage_group", "")),
        "grade": _grade(out.get("grade", "")),
        "pT": _tnm(out.get("pT", ""), "T"),
        "pN": _tnm(out.get("pN", ""), "N"),
        "pM": _tnm(out.get("pM", ""), "M"),
        "nodes_positive": _num(out.get("nodes_positive")),
        "nodes_examined": _num(out.get("nodes_examined")),
        "tumor_size": _size_cm(out.get("tumor_size", "")),
        "margin": _MARGIN.get(out.get("margin_status"), np.nan),
        "lvi": _PRESENCE.get(out.get("lymphovascular_invasion"), np.nan),
        "pni": _PRESENCE.get(out.get("perineural_invasion"), np.nan),
    }


def report_covariates(cache_dir: Path | str, source: str) -> dict[str, dict[str, float]]:
    """Per case id, the numeric covariates of a refined-report source (records with status ok)."""
    return {case: encode_report(out) for case, out in read_outputs(cache_dir, source).items()}
