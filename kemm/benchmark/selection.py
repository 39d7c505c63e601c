"""Nested design choice: decide between candidate designs on inner splits of the training folds.

For outer fold k of every cohort, the training patients of fold k are split once more
(``inner_split``: stratified, seeded, 20% held out); every candidate row is trained on the
inner-training part and scored (Harrell's C) on the inner hold-out. The reported fold k is
never seen. The choice for fold k is the candidate with the best mean inner C over the
cohorts' fold-k inner splits; the overall choice (the design a new cohort gets, written in
base.yaml) is the best mean over all inner splits. ``nested_rows`` then builds the reported
row of a group from the candidates' outer-fold results, fold by fold.

Imports: pandas, ``kemm.model`` (cohort, splits, config, train), ``kemm.benchmark.specs``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from kemm.benchmark.specs import BenchmarkError, CohortSpec, experiment_configs, format_paths
from kemm.model.data.cohort import load_cohort
from kemm.model.data.splits import Fold, inner_split, read_split_file, write_splits
from kemm.model.run.config import ColumnMap
from kemm.model.run.rundir import RunDir
from kemm.model.run.train import run_experiment

log = logging.getLogger(__name__)
INNER_FRACTION = 0.2


def selection_groups(bench_base: dict) -> list[dict]:
    """``[{name, candidates}]`` from ``benchmark.selection`` (a list, or one mapping)."""
    sel = bench_base.get("selection") or []
    groups = [sel] if isinstance(sel, dict) else list(sel)
    for g in groups:
        if not g.get("name") or len(g.get("candidates") or []) < 1:
            raise BenchmarkError(f"base.yaml: benchmark.selection entry {g!r} needs `name` and `candidates`")
    return groups


def write_inner_splits(spec: CohortSpec, data_root: Path, out: Path, seed: int = 0) -> Path:
    """``out/splits_{k}.csv``: fold k's training patients split into (fit, inner validation)."""
    d = format_paths(spec.config["data"], data_root=str(data_root))
    outer = Path(d["splits_dir"])
    cohort = load_cohort(d["cohort"], d.get("format", "auto"), ColumnMap(**d.get("columns", {})),
                         d.get("endpoint", "OS"), d.get("cancer_type"))
    t = cohort.table
    folds = []
    for k in range(len(list(outer.glob("splits_*.csv")))):
        train, _ = read_split_file(outer / f"splits_{k}.csv")
        train = [c for c in train if c in t.index]
        fit, val = inner_split(train, t.loc[train, "time"].to_numpy(), t.loc[train, "event"].to_numpy(),
                               INNER_FRACTION, seed + k)
        folds.append(Fold(k, fit, val, f"inner split of {outer / f'splits_{k}.csv'}"))
    write_splits(folds, out)
    return out


def candidates(bench_base: dict, only: list[str] | None = None) -> set[str]:
    """Every candidate of ``benchmark.selection``, or ``only`` after checking that each is one."""
    cands = {c for g in selection_groups(bench_base) for c in g["candidates"]}
    if only:
        missing = sorted(set(only) - cands)
        if missing:
            raise BenchmarkError(f"--select --rows: {', '.join(missing)} is no candidate of benchmark.selection; "
                                 f"candidates: {', '.join(sorted(cands))}")
        return set(only)
    return cands


def run_selection(specs: list[CohortSpec], bench_base: dict, data_root: Path, cache_dir: Path, out_dir: Path,
                  overrides: list[str], only: list[str] | None = None) -> pd.DataFrame:
    """Train every candidate (or only the candidates in ``only``) on every inner split; returns
    per (cohort, fold, model) inner C."""
    cands = candidates(bench_base, only)
    rows = []
    for spec in specs:
        inner = write_inner_splits(spec, data_root, out_dir / "inner_splits" / spec.cohort)
        for profile, cfg in experiment_configs(spec, bench_base, data_root, cache_dir, out_dir / "inner", overrides,
                                               only=cands):
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"splits_dir": str(inner)})})
            log.info("selection: cohort %s, profile %s (%d candidates)", spec.cohort, profile, len(cfg.models))
            for m in RunDir(run_experiment(cfg)).all_fold_records():
                rows.append({"cohort": spec.cohort, "fold": m["fold"], "model": m["model"], "inner_c": m.get("c_index")})
    return pd.DataFrame(rows)


def merge_inner(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    """The inner results in ``path`` (an earlier ``--select``) with ``new``'s models replaced or added.

    Candidates decided together must share splits and settings: the inner splits are
    deterministic (seeded per fold), and a candidate's row is its own, so adding one later
    leaves the others' inner C unchanged."""
    if not path.is_file():
        return new
    old = pd.read_csv(path)
    if set(old.columns) != {"cohort", "fold", "model", "inner_c"}:
        raise BenchmarkError(f"{path}: not a selection_inner.csv (columns cohort, fold, model, inner_c)")
    return pd.concat([old[~old.model.isin(set(new.model))], new], ignore_index=True)


def choose(inner: pd.DataFrame, groups: list[dict]) -> pd.DataFrame:
    """Per group: the chosen candidate for each fold (``fold`` = -1: over all inner splits)."""
    out = []
    for g in groups:
        d = inner[inner.model.isin(g["candidates"])]
        if d.empty:  # no candidate of this group has inner results yet (e.g. --select --rows of another group)
            continue
        for k, dk in [(-1, d), *d.groupby("fold")]:
            means = dk.groupby("model")["inner_c"].mean().sort_values(ascending=False)
            out.append({"group": g["name"], "fold": int(k), "chosen": means.index[0],
                        **{f"mean_inner_c[{m}]": float(v) for m, v in means.items()}})
    return pd.DataFrame(out)


def nested_rows(folds: pd.DataFrame, choice: pd.DataFrame) -> pd.DataFrame:
    """Outer-fold results of each group's fold-wise choice, as rows labelled with the group name."""
    rows = []
    for _, ch in choice[choice.fold >= 0].iterrows():
        sel = folds[(folds.model == ch["chosen"]) & (folds.fold == ch["fold"])]
        for _, r in sel.iterrows():
            rows.append({**r.to_dict(), "model": ch["group"], "experiment": f"nested choice: {ch['chosen']}"})
    return pd.DataFrame(rows)


def render_selection(inner: pd.DataFrame, choice: pd.DataFrame, groups: list[dict]) -> str:
    lines = ["# Nested design choice on inner splits of the training folds", "",
             "Generated by `kemm benchmark --select`; do not edit by hand.", "",
             f"Protocol: for each outer fold k of each cohort, fold k's training patients are split into "
             f"{1 - INNER_FRACTION:.0%} inner-training / {INNER_FRACTION:.0%} inner-validation (stratified by event "
             "and time, seed = k); every candidate is trained on the inner-training part with its own training settings "
             "(the benchmark's, with the row's `train` overrides) and scored by Harrell's C on the inner-validation part. The reported validation "
             "fold k is never used. Choice for fold k: best mean inner C over the cohorts' fold-k splits; overall "
             "choice: best mean over all inner splits (the design written into base.yaml for new cohorts).", ""]
    for g in groups:
        lines += [f"## {g['name']}", "", "| candidate | " + " | ".join(f"fold {k}" for k in range(5)) + " | all |",
                  "|---|" + "---|" * 6]
        d = inner[inner.model.isin(g["candidates"])]
        for m in g["candidates"]:
            dm = d[d.model == m]
            per = [dm[dm.fold == k]["inner_c"].mean() for k in range(5)]
            lines.append(f"| {m} | " + " | ".join(f"{v:.3f}" for v in per) + f" | {dm['inner_c'].mean():.3f} |")
        ch = choice[choice.group == g["name"]].set_index("fold")["chosen"] if len(choice) else pd.Series(dtype=object)
        if -1 not in ch.index:
            lines += ["", "Chosen: nothing yet (no candidate of this group has inner results).", ""]
            continue
        lines += ["", "Chosen: " + ", ".join(f"fold {k}: `{ch[k]}`" for k in sorted(ch.index) if k >= 0)
                  + f"; overall: `{ch[-1]}`.", ""]
    return "\n".join(lines) + "\n"
