"""Patient-level cross-validation splits.

Published split files (MCAT, PORPOISE, SurvPath) are ``splits_{k}.csv`` with an
unnamed index column, then ``train`` and ``val`` patient barcodes; ``val`` is
shorter and padded with empty cells.  Generated splits are seeded and
stratified by event status and time quantile, and are written in the same
format so a run can be repeated from its own files.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kemm.model.errors import DataError

_SPLIT_RE = re.compile(r"^splits_(\d+)\.csv$")


@dataclass(frozen=True)
class Fold:
    k: int
    train: list[str]
    val: list[str]
    source: str = "generated"


def read_split_file(path: Path | str) -> tuple[list[str], list[str]]:
    """``(train_ids, val_ids)`` of one ``splits_{k}.csv`` (padding dropped)."""
    path = Path(path)
    df = pd.read_csv(path, index_col=0, dtype=str)
    for col in ("train", "val"):
        if col not in df.columns:
            raise DataError(f"{path}: no column {col!r}; expected the columns ',train,val'")
    train = [s.strip() for s in df["train"].dropna() if s.strip()]
    val = [s.strip() for s in df["val"].dropna() if s.strip()]
    both = sorted(set(train) & set(val))
    if both:
        raise DataError(f"{path}: case(s) {both[:5]} are in both train and val")
    for name, ids in (("train", train), ("val", val)):
        dup = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
        if dup:
            raise DataError(f"{path}: duplicate case id(s) {dup[:5]} in column {name!r}")
    return train, val


def load_splits(splits_dir: Path | str, case_ids: list[str]) -> list[Fold]:
    """Read every ``splits_{k}.csv`` of a folder and check its cases against the cohort.

    Cases of the cohort that a split file does not mention are left out of that
    fold (published splits cover the patients with features); a case that a split
    names but the cohort lacks is an error.
    """
    d = Path(splits_dir)
    if not d.is_dir():
        raise DataError(f"{d}: splits directory not found (data.splits_dir)")
    files = sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _SPLIT_RE.match(p.name)))
    if not files:
        raise DataError(f"{d}: no splits_<k>.csv files (expected splits_0.csv, splits_1.csv, ...)")
    ks = [k for k, _ in files]
    if ks != list(range(len(ks))):
        raise DataError(f"{d}: split files must be numbered 0..{len(ks) - 1}, found {ks}")
    known = set(case_ids)
    folds = []
    for k, p in files:
        train, val = read_split_file(p)
        for ids, col in ((train, "train"), (val, "val")):
            unknown = [c for c in ids if c not in known]
            if unknown:
                raise DataError(
                    f"{p}: case {unknown[0]!r} (column {col!r}) is not in the cohort table"
                    + (f" ({len(unknown)} such cases, e.g. {unknown[:5]})" if len(unknown) > 1 else "")
                    + "; use the split files that belong to this cohort"
                )
        folds.append(Fold(k, train, val, str(p)))
    return folds


def make_splits(
    case_ids: list[str], time: np.ndarray, event: np.ndarray, n_folds: int = 5, seed: int = 0, n_time_bins: int = 4
) -> list[Fold]:
    """Seeded K folds stratified by event status x time quantile.

    Each stratum is shuffled and dealt round-robin over the folds, starting at a
    fold offset that rotates so fold sizes stay within one patient of each other.
    """
    n = len(case_ids)
    if n < n_folds:
        raise DataError(f"{n} patients cannot be split into {n_folds} folds")
    time = np.asarray(time, float)
    event = np.asarray(event, int)
    rng = np.random.default_rng(seed)
    strata = np.zeros(n, dtype=int)
    for e in (0, 1):
        idx = np.flatnonzero(event == e)
        if len(idx) == 0:
            continue
        q = np.quantile(time[idx], np.linspace(0, 1, n_time_bins + 1)[1:-1])
        strata[idx] = e * n_time_bins + np.searchsorted(q, time[idx], side="right")
    fold_of = np.empty(n, dtype=int)
    offset = 0
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        fold_of[idx] = (np.arange(len(idx)) + offset) % n_folds
        offset = (offset + len(idx)) % n_folds
    ids = np.asarray(case_ids, dtype=object)
    return [Fold(k, list(ids[fold_of != k]), list(ids[fold_of == k])) for k in range(n_folds)]


def inner_split(
    case_ids: list[str], time: np.ndarray, event: np.ndarray, fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Training fold -> (fit, inner validation) for early stopping; the reported fold is never used."""
    n_folds = max(2, int(round(1.0 / fraction)))
    f = make_splits(case_ids, time, event, n_folds=n_folds, seed=seed)[0]
    return f.train, f.val


def write_splits(folds: list[Fold], out_dir: Path | str) -> None:
    """Write folds as ``splits_{k}.csv`` in the published format (``,train,val``, padded val)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in folds:
        n = max(len(f.train), len(f.val))
        df = pd.DataFrame(
            {"train": f.train + [None] * (n - len(f.train)), "val": f.val + [None] * (n - len(f.val))}
        )
        tmp = out / f".splits_{f.k}.csv.tmp"
        df.to_csv(tmp)
        tmp.replace(out / f"splits_{f.k}.csv")


def check_folds(folds: list[Fold], events: pd.Series) -> None:
    """Every fold needs validation patients, and its training part at least one event
    (bins and the NLL are undefined otherwise)."""
    for f in folds:
        if not f.val:
            raise DataError(
                f"fold {f.k} ({f.source}): no validation patient of the cohort (empty `val` column, or none of "
                "its case ids is in the cohort table); every fold needs patients to evaluate on"
            )
        ev = events.loc[f.train]
        if int(ev.sum()) == 0:
            raise DataError(
                f"fold {f.k} ({f.source}): all {len(ev)} training patients are censored; "
                "survival bins need observed events - check the censorship column (1 = censored) or the splits"
            )
