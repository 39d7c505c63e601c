"""Clinical covariates for the CoxPH baseline.

Cohort columns (age, sex, any numeric column) plus fields of refined reports
(stage, grade, pT, pN, nodes, size, margins, LVI, PNI) where a report source is
configured.  Report fields are read, read-only, from the source's records in
the knowledge cache; values "not reported" become missing, and missing values
are imputed by ``CoxPHClinical`` (training-fold median plus a missing indicator).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from kemm.model.cohort import Cohort, DataError

REPORT_FIELDS = ("stage", "grade", "pT", "pN", "pM", "nodes_positive", "nodes_examined", "tumor_size", "margin", "lvi", "pni")
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


def read_report_fields(cache_dir: Path | str, source: str) -> pd.DataFrame:
    """Per-case numeric report fields of a refined-report source (only records with status ok)."""
    from kemm.knowledge.api import read_outputs
    from kemm.knowledge.cache import CacheError

    try:
        outputs = read_outputs(cache_dir, source)
    except CacheError as e:
        raise DataError(str(e)) from None
    rows = {case: encode_report(out) for case, out in outputs.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(REPORT_FIELDS))


def clinical_frame(cohort: Cohort, names: list[str], report_fields: pd.DataFrame | None = None) -> pd.DataFrame:
    """Raw covariates (NaN = missing), one row per cohort patient, in ``names`` order."""
    t = cohort.table
    cols = {}
    for n in names:
        if n in t.columns:
            cols[n] = pd.to_numeric(t[n], errors="coerce")
        elif n in REPORT_FIELDS:
            if report_fields is None:
                continue  # no report source configured: the field is simply unavailable
            cols[n] = report_fields[n].reindex(t.index) if n in report_fields else pd.Series(np.nan, index=t.index)
        else:
            raise DataError(
                f"data.clinical: {n!r} is neither a column of {cohort.path} nor a report field {list(REPORT_FIELDS)}"
            )
    return pd.DataFrame(cols, index=t.index)
