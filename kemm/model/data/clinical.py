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


class ClinicalScaler:
    """Standardisation of the covariates a neural model receives, fitted on the training fold only.

    Each column: ``(x - mean) / std`` with the training fold's mean and std of observed values;
    a missing value becomes the training mean (0 after scaling), and a ``<col>__missing`` 0/1
    column is added when the training fold had missing values in that column. A column
    constant in training gets std 1 (it then carries nothing, but keeps the width fixed).

    Attributes (after ``fit``): ``columns_`` input names, ``mean_``, ``std_``, ``indicator_``
    (per column), ``out_columns_`` (names of the ``[n, C_out]`` output).
    """

    def __init__(self, columns: list[str]) -> None:
        self.columns = list(columns)

    def fit(self, X: pd.DataFrame) -> ClinicalScaler:
        """``X`` ``[n_train, C]`` raw covariates (NaN = missing) of the training patients."""
        x = X[self.columns].to_numpy(float)
        obs = ~np.isnan(x)
        n = obs.sum(0)
        mean = np.where(n > 0, np.nansum(x, 0) / np.maximum(n, 1), 0.0)
        var = np.where(n > 1, np.nansum((x - mean) ** 2 * obs, 0) / np.maximum(n - 1, 1), 1.0)
        std = np.sqrt(var)
        self.mean_ = mean.tolist()
        self.std_ = np.where(std > 1e-8, std, 1.0).tolist()
        self.indicator_ = [bool((~obs[:, j]).any()) for j in range(x.shape[1])]
        self.out_columns_ = self.columns + [f"{c}__missing" for c, ind in zip(self.columns, self.indicator_) if ind]
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """``[n, C]`` raw -> ``[n, C_out]`` float32, no NaN."""
        x = X[self.columns].to_numpy(float)
        miss = np.isnan(x)
        z = (np.where(miss, np.asarray(self.mean_), x) - np.asarray(self.mean_)) / np.asarray(self.std_)
        ind = [miss[:, j].astype(float) for j, on in enumerate(self.indicator_) if on]
        out = np.column_stack([z, *ind]) if ind else z
        return out.astype(np.float32)

    @property
    def dim(self) -> int:
        return len(self.out_columns_)

    def state_dict(self) -> dict:
        return {"columns": self.columns, "mean": self.mean_, "std": self.std_, "indicator": self.indicator_}

    @classmethod
    def from_state(cls, state: dict) -> ClinicalScaler:
        s = cls(state["columns"])
        s.mean_, s.std_, s.indicator_ = list(state["mean"]), list(state["std"]), list(state["indicator"])
        s.out_columns_ = s.columns + [f"{c}__missing" for c, ind in zip(s.columns, s.indicator_) if ind]
        return s
