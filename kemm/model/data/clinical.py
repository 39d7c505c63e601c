"""Clinical covariates for the CoxPH baseline.

Cohort columns (age, sex, any numeric column) plus fields of refined reports
(stage, grade, pT, pN, nodes, size, margins, LVI, PNI) where a report source is
configured.  Report fields are read, read-only, from the source's records in
the knowledge cache; values "not reported" become missing, and missing values
are imputed by ``CoxPHClinical`` (training-fold median plus a missing indicator).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import kemm.knowledge as knowledge
from kemm.model.data.cohort import Cohort
from kemm.model.errors import DataError


def read_report_fields(cache_dir: Path | str, source: str) -> pd.DataFrame:
    """Per-case numeric report fields of a refined-report source (only records with status ok)."""
    try:
        rows = knowledge.report_covariates(cache_dir, source)
    except knowledge.KnowledgeError as e:
        raise DataError(str(e)) from None
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(knowledge.REPORT_COVARIATES))


def clinical_frame(cohort: Cohort, names: list[str], report_fields: pd.DataFrame | None = None) -> pd.DataFrame:
    """Raw covariates (NaN = missing), one row per cohort patient, in ``names`` order."""
    t = cohort.table
    cols = {}
    for n in names:
        if n in t.columns:
            cols[n] = pd.to_numeric(t[n], errors="coerce")
        elif n in knowledge.REPORT_COVARIATES:
            if report_fields is None:
                continue  # no report source configured: the field is simply unavailable
            cols[n] = report_fields[n].reindex(t.index) if n in report_fields else pd.Series(np.nan, index=t.index)
        else:
            raise DataError(
                f"data.clinical: {n!r} is neither a column of {cohort.path} nor a report field {list(knowledge.REPORT_COVARIATES)}"
            )
    return pd.DataFrame(cols, index=t.index)
