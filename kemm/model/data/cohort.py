"""Cohort tables: one row per patient with labels, slides, cancer type and covariates.

Reads MCAT/PORPOISE ``tcga_*_all_clean.csv.zip`` (the single member is read in
memory: some member names contain ``../`` and must never be extracted),
SurvPath metadata (OS/DSS/PFI endpoints), and any CSV/TSV with a column
mapping.  Input tables have one row per slide; rows are gathered per
``case_id`` and the labels of a patient's rows must agree.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kemm.model.errors import DataError
from kemm.model.run.config import ColumnMap

OMIC_SUFFIXES = ("_rnaseq", "_cnv", "_mut")
ENDPOINT_COLUMNS = {
    "OS": ("survival_months", "censorship"),
    "DSS": ("survival_months_dss", "censorship_dss"),
    "PFI": ("survival_months_pfi", "censorship_pfi"),
}


@dataclass
class Cohort:
    """Patient-level table.

    ``table`` is indexed by ``case_id`` and has the columns ``time`` (float,
    >= 0), ``event`` (int, 1 = event observed), ``slide_ids`` (list[str]),
    ``cancer_type`` (str or None), ``age``/``sex`` when mapped, and every
    genomic ``*_rnaseq|*_cnv|*_mut`` column of the source.
    """

    table: pd.DataFrame
    path: str
    has_labels: bool = True

    @property
    def case_ids(self) -> list[str]:
        return list(self.table.index)

    @property
    def omic_columns(self) -> list[str]:
        return [c for c in self.table.columns if c.endswith(OMIC_SUFFIXES)]

    def __len__(self) -> int:
        return len(self.table)

    def subset(self, case_ids: list[str]) -> "Cohort":
        return Cohort(self.table.loc[list(case_ids)], self.path, self.has_labels)


def read_table(path: Path | str) -> pd.DataFrame:
    """A CSV/TSV, or the single CSV member of a zip read in memory (never extracted)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: cohort table not found")
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            members = [n for n in z.namelist() if not n.endswith("/")]
            csvs = [n for n in members if n.endswith((".csv", ".csv.zip", ".tsv"))] or members
            if len(csvs) != 1:
                raise DataError(f"{path}: expected exactly one CSV member in the zip, found {members}")
            raw = z.read(csvs[0])  # in memory: the member name may contain '../'
        return pd.read_csv(io.BytesIO(raw), low_memory=False)
    sep = "\t" if path.suffix in (".tsv", ".txt") else ","
    return pd.read_csv(path, sep=sep, low_memory=False)


def _detect_format(df: pd.DataFrame) -> str:
    if {"survival_months_dss", "censorship_dss"} <= set(df.columns):
        return "survpath"
    if {"survival_months", "censorship", "case_id"} <= set(df.columns):
        return "mcat"
    return "csv"


def _require(df: pd.DataFrame, cols: dict[str, str | None], path: str) -> None:
    missing = [(role, c) for role, c in cols.items() if c is not None and c not in df.columns]
    if missing:
        shown = list(df.columns[:25]) + (["..."] if len(df.columns) > 25 else [])
        what = ", ".join(f"{c!r} (data.columns.{role})" for role, c in missing)
        raise DataError(
            f"{path}: missing column(s) {what}; the table has {shown}. "
            "Map the right names under data.columns in the config."
        )


def load_cohort(
    path: Path | str,
    fmt: str = "auto",
    columns: ColumnMap | None = None,
    endpoint: str = "OS",
    cancer_type: str | None = None,
    require_labels: bool = True,
) -> Cohort:
    """Read a cohort table and gather it to one row per patient.

    Args:
        path: .csv/.tsv, or a MCAT/PORPOISE .csv.zip.
        fmt: "auto", "mcat", "survpath" or "csv" (auto detects SurvPath by its DSS columns).
        columns: column mapping; time/censorship default to the endpoint's columns.
        endpoint: OS, DSS or PFI (SurvPath tables carry all three).
        cancer_type: used for every patient when the table has no cancer-type column.
        require_labels: False for `kemm predict` on new patients without follow-up.
    """
    path_s = str(path)
    df = read_table(path)
    cm = columns or ColumnMap()
    fmt = _detect_format(df) if fmt == "auto" else fmt
    if endpoint != "OS" and fmt != "survpath" and cm.time is None:
        raise DataError(
            f"{path_s}: endpoint {endpoint} needs the columns {ENDPOINT_COLUMNS[endpoint]} (SurvPath metadata) "
            "or an explicit data.columns.time / data.columns.censorship"
        )
    t_default, c_default = ENDPOINT_COLUMNS[endpoint]
    time_col = cm.time or t_default
    event_col = cm.event
    cens_col = None if event_col else (cm.censorship or c_default)
    has_labels = require_labels or (time_col in df.columns and (event_col or cens_col) in df.columns)

    optional = {"slide_id": cm.slide_id, "cancer_type": cm.cancer_type, "age": cm.age, "sex": cm.sex}
    # Optional roles that are at their defaults and absent are simply unused.
    defaults = ColumnMap()
    for role, col in list(optional.items()):
        if col is not None and col not in df.columns and col == getattr(defaults, role):
            optional[role] = None
    required = {"case_id": cm.case_id, **optional}
    if has_labels:
        required.update({"time": time_col, "event" if event_col else "censorship": event_col or cens_col})
    _require(df, required, path_s)

    ids = df[cm.case_id]
    if ids.isna().any():
        rows = list(np.flatnonzero(ids.isna().to_numpy())[:5] + 2)
        raise DataError(f"{path_s}: empty {cm.case_id!r} in row(s) {rows}; every row needs a patient id")
    df = df.assign(**{cm.case_id: ids.astype(str).str.strip()})

    out = pd.DataFrame(index=pd.Index(pd.unique(df[cm.case_id]), name="case_id"))
    grouped = df.groupby(cm.case_id, sort=False)

    out["slide_ids"] = _slide_ids(df, grouped, optional["slide_id"], len(out), path_s)
    if has_labels:
        out["time"], out["event"] = _labels(grouped, time_col, event_col, cens_col, path_s)
    if optional["cancer_type"]:
        ct = grouped[optional["cancer_type"]].first()
        out["cancer_type"] = ct.where(ct.isna(), ct.astype(str).str.strip().str.upper())  # missing stays missing
    else:
        out["cancer_type"] = cancer_type.upper() if cancer_type else None
    for role in ("age", "sex"):
        if optional[role]:
            out[role] = pd.to_numeric(grouped[optional[role]].first(), errors="coerce")
    omics = [c for c in df.columns if c.endswith(OMIC_SUFFIXES)]
    if omics:
        out = out.join(_patient_omics(df, cm.case_id, omics, path_s))
    return Cohort(out, path_s, has_labels)


def _patient_omics(df: pd.DataFrame, case_col: str, omics: list[str], path_s: str) -> pd.DataFrame:
    """Genomic values per patient ``[patients, columns]``; its slide rows must agree (a missing value is no conflict)."""
    multi = df.loc[df[case_col].duplicated(keep=False), [case_col, *omics]]  # only these patients can conflict
    if len(multi):
        num = multi[omics].apply(pd.to_numeric, errors="coerce")
        bad = num.groupby(multi[case_col].to_numpy(), sort=False).nunique(dropna=True).gt(1)
        if bad.to_numpy().any():
            case = bad.index[bad.any(axis=1).to_numpy()][0]
            col = bad.columns[bad.loc[case].to_numpy()][0]
            vals = sorted(num.loc[(multi[case_col] == case).to_numpy(), col].dropna().unique().tolist())
            raise DataError(
                f"{path_s}: case {case!r} has conflicting values in column {col!r} across its slide rows ({vals}); "
                "a patient has one genomic profile: fix or drop the extra rows"
            )
    return df.groupby(case_col, sort=False)[omics].first().apply(pd.to_numeric, errors="coerce")


def _slide_ids(df: pd.DataFrame, grouped, col: str | None, n: int, path_s: str) -> list | pd.Series:
    """Per patient, the list of its slide ids (every slide id must appear once)."""
    if not col:
        return [[] for _ in range(n)]
    sid = df[col]
    dup = df.loc[sid.notna() & sid.duplicated(keep=False), col]
    if len(dup):
        raise DataError(
            f"{path_s}: duplicate slide id(s) in column {col!r}: "
            f"{sorted(set(dup.astype(str)))[:5]}; each slide must appear once"
        )
    return grouped[col].agg(lambda s: [str(x) for x in s if pd.notna(x)])


def _labels(grouped, time_col: str, event_col: str | None, cens_col: str | None, path_s: str) -> tuple[pd.Series, pd.Series]:
    """Per patient follow-up time and event (1 = observed), from an event or a censorship column."""
    time = _patient_value(grouped, time_col, path_s, numeric=True)
    raw_ev = _patient_value(grouped, event_col or cens_col, path_s, numeric=True)
    bad = raw_ev[~raw_ev.isin([0, 1])]
    if len(bad):
        raise DataError(
            f"{path_s}: column {(event_col or cens_col)!r} must be 0/1, case {bad.index[0]!r} has {bad.iloc[0]!r}"
        )
    _check_times(time, time_col, path_s)
    return time, (raw_ev if event_col else 1 - raw_ev).astype(int)


def _patient_value(grouped, col: str, path: str, numeric: bool) -> pd.Series:
    vals = grouped[col]
    n_distinct = vals.nunique(dropna=False)
    conflict = n_distinct[n_distinct > 1]
    if len(conflict):
        case = conflict.index[0]
        raise DataError(
            f"{path}: case {case!r} has conflicting values in column {col!r} across its slide rows "
            f"({sorted(map(str, grouped.get_group(case)[col].unique()))}); a patient has one label"
        )
    s = vals.first()
    if numeric:
        num = pd.to_numeric(s, errors="coerce")
        bad = num.isna() & s.notna()
        if bad.any():
            raise DataError(f"{path}: column {col!r} of case {s.index[bad][0]!r} is {s[bad].iloc[0]!r}, expected a number")
        s = num
    return s


def _check_times(t: pd.Series, col: str, path: str) -> None:
    nan = t[t.isna()]
    if len(nan):
        raise DataError(
            f"{path}: column {col!r} is empty/NaN for {len(nan)} case(s), e.g. {list(nan.index[:5])}; "
            "drop them or fill the follow-up time"
        )
    neg = t[t < 0]
    if len(neg):
        raise DataError(
            f"{path}: column {col!r} is negative for case(s) {list(neg.index[:5])} (e.g. {neg.iloc[0]}); "
            "survival times must be >= 0"
        )
