"""Genomic groups (the genomic tokens) and per-fold standard scaling.

Groups come from:

- a ``signatures.csv`` as in MCAT: columns are family names (six families:
  tumour suppressors, oncogenes, kinases, differentiation markers,
  transcription factors, cytokines), values are gene symbols; a family takes
  every ``<gene>_rnaseq|_cnv|_mut`` column present in the cohort table;
- a pathway table: either the same wide layout, or a genes x pathways 0/1
  composition matrix (SurvPath ``*_comps.csv``);
- ``all``: every genomic column as one group.

Scaling is fitted on the training fold only and applied to every split.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kemm.model.data.cohort import OMIC_SUFFIXES
from kemm.model.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class GenomicGroups:
    names: list[str]
    columns: list[list[str]]

    @property
    def dims(self) -> list[int]:
        return [len(c) for c in self.columns]

    def __len__(self) -> int:
        return len(self.names)


def _suffixes(modalities: list[str]) -> tuple[str, ...]:
    return tuple(f"_{m}" for m in modalities)


def _match(genes: list[str], available: set[str], suffixes: tuple[str, ...]) -> list[str]:
    out = []
    for suf in suffixes:  # MCAT order: rnaseq, then cnv, then mut (sorted within each)
        out += sorted({f"{g}{suf}" for g in genes} & available)
    return out


def _finish(names: list[str], cols: list[list[str]], min_size: int, what: str) -> GenomicGroups:
    keep = [(n, c) for n, c in zip(names, cols) if len(c) >= min_size]
    dropped = [n for n, c in zip(names, cols) if len(c) < min_size]
    if dropped:
        log.warning("genomic groups with < %d matching columns dropped: %s", min_size, dropped)
    if not keep:
        raise DataError(
            f"{what}: no group matched any genomic column of the cohort table "
            "(expected columns named <GENE>_rnaseq, <GENE>_cnv or <GENE>_mut)"
        )
    return GenomicGroups([n for n, _ in keep], [c for _, c in keep])


def groups_from_signatures(
    path: Path | str, table_columns: list[str], modalities: list[str] = ("rnaseq", "cnv", "mut"), min_size: int = 1
) -> GenomicGroups:
    """Wide table: one column per group, gene symbols down the column (MCAT signatures.csv)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: signatures table not found (data.genomics.signatures)")
    sig = pd.read_csv(path, dtype=str)
    available = set(table_columns)
    names, cols = [], []
    for fam in sig.columns:
        genes = [g.strip() for g in sig[fam].dropna() if g.strip()]
        names.append(str(fam))
        cols.append(_match(genes, available, _suffixes(list(modalities))))
    return _finish(names, cols, min_size, str(path))


def groups_from_pathways(
    path: Path | str, table_columns: list[str], modalities: list[str] = ("rnaseq", "cnv", "mut"), min_size: int = 1
) -> GenomicGroups:
    """A genes x pathways 0/1 matrix (first column = gene), or the wide signatures layout."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: pathway table not found (data.genomics.pathways)")
    df = pd.read_csv(path)
    body = df.iloc[:, 1:]
    is_matrix = body.shape[1] > 0 and body.apply(pd.to_numeric, errors="coerce").isin([0, 1]).all().all()
    if not is_matrix:
        return groups_from_signatures(path, table_columns, modalities, min_size)
    genes = df.iloc[:, 0].astype(str).str.strip().to_numpy()
    available = set(table_columns)
    names, cols = [], []
    for pw in body.columns:
        members = list(genes[body[pw].astype(int).to_numpy() == 1])
        names.append(str(pw))
        cols.append(_match(members, available, _suffixes(list(modalities))))
    return _finish(names, cols, min_size, str(path))


def all_group(table_columns: list[str], modalities: list[str] = ("rnaseq", "cnv", "mut")) -> GenomicGroups:
    cols = [c for c in table_columns if c.endswith(_suffixes(list(modalities)))]
    if not cols:
        raise DataError(
            "the cohort table has no genomic columns (expected *_rnaseq, *_cnv or *_mut); "
            "set data.genomics.groups: none to train without genomics"
        )
    return GenomicGroups(["genomics"], [cols])


@dataclass
class GenomicScaler:
    """Standard scaling per column, fitted on training patients only.

    A patient whose genomic values are all missing is marked missing (masked);
    isolated missing values are set to the training mean (0 after scaling) and counted.
    """

    columns: list[str]
    mean_: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std_: np.ndarray = field(default_factory=lambda: np.ones(0))
    n_imputed_: int = 0

    def fit(self, df: pd.DataFrame) -> "GenomicScaler":
        x = df[self.columns].to_numpy(dtype=np.float64)
        present = ~np.isnan(x).all(axis=1)
        if not present.any():
            raise DataError("no training patient has genomic values; set data.genomics.groups: none")
        x = x[present]
        self.mean_ = np.nan_to_num(np.nanmean(x, axis=0))
        std = np.nan_to_num(np.nanstd(x, axis=0))
        self.std_ = np.where(std > 1e-8, std, 1.0)  # constant columns stay 0 after centring
        return self

    def transform(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(values [n, G] float32, present [n] bool)``."""
        x = df[self.columns].to_numpy(dtype=np.float64)
        present = ~np.isnan(x).all(axis=1)
        z = (x - self.mean_) / self.std_
        holes = np.isnan(z) & present[:, None]
        self.n_imputed_ = int(holes.sum())
        z[holes] = 0.0
        z[~present] = 0.0  # masked by `present`, never read as data
        return z.astype(np.float32), present

    def state_dict(self) -> dict:
        return {"columns": self.columns, "mean": self.mean_.tolist(), "std": self.std_.tolist()}

    @classmethod
    def from_state(cls, st: dict) -> "GenomicScaler":
        s = cls(list(st["columns"]))
        s.mean_ = np.asarray(st["mean"], float)
        s.std_ = np.asarray(st["std"], float)
        return s


def build_groups(cfg, table_columns: list[str]) -> GenomicGroups | None:
    """Groups from a ``GenomicsConfig`` (None when genomics are off)."""
    if cfg.groups == "none":
        return None
    if cfg.groups == "signatures":
        return groups_from_signatures(cfg.signatures, table_columns, cfg.modalities, cfg.min_group_size)
    if cfg.groups == "pathways":
        return groups_from_pathways(cfg.pathways, table_columns, cfg.modalities, cfg.min_group_size)
    return all_group(table_columns, cfg.modalities)


__all__ = [
    "GenomicGroups",
    "GenomicScaler",
    "all_group",
    "build_groups",
    "groups_from_pathways",
    "groups_from_signatures",
    "OMIC_SUFFIXES",
]
