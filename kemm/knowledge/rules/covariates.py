"""Numeric covariates from validated refined reports (stage, grade, pT/pN/pM, nodes, size, ...).

The knowledge half owns the meaning of its fields: this module turns a ``RefinedReport``
output into numbers ("not reported" -> NaN) for classical models. The model half reads
them through ``kemm.knowledge.report_covariates`` and never parses knowledge strings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from kemm.knowledge.api import read_outputs
from kemm.knowledge.rules.staging import grade_number, stage_number, tnm_number

REPORT_COVARIATES = ("stage", "grade", "pT", "pN", "pM", "nodes_positive", "nodes_examined", "tumor_size", "margin", "lvi", "pni")


def _nan(x: float | None) -> float:
    return np.nan if x is None else float(x)


def _stage(v: str) -> float:
    return _nan(stage_number(v))


def _grade(v: str) -> float:
    return _nan(grade_number(v))


def _tnm(v: str, letter: str) -> float:
    return _nan(tnm_number(v, letter))


def _size_cm(v: str) -> float:
    m = _SIZE.match(str(v))
    if not m:
        return np.nan
    x = float(m.group(1))
    return x / 10 if m.group(2) == "mm" else x


_SIZE = re.compile(r"^([0-9.]+) (cm|mm)$")


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan


_PRESENCE = {"present": 1.0, "absent": 0.0}
_MARGIN = {"positive": 1.0, "close": 0.5, "negative": 0.0}


def encode_report(out: dict[str, Any]) -> dict[str, float]:
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
