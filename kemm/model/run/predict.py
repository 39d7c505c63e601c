"""Fold-ensembled predictions of a trained run for new patients.

Every fold's model of one run model predicts every patient of the new cohort;
risks are averaged, and survival curves (each fold on its own bins) are read on
one common time grid (the mean of the folds' bin edges) and averaged.  The new
cohort is read with the run's column mapping; labels are optional.  Each fold
model carries its own fitted state (genomic scaler, CoxPH encoding), restored by
``FoldModel.load`` from plain data or a weights-only checkpoint; a pickled fold
model is refused (``rundir.py``).

Imports: numpy, pandas, ``kemm.model.data``, ``kemm.model.run`` (config, foldmodel,
registry, rundir); never ``train``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kemm.model.data.clinical import clinical_frame, read_report_fields
from kemm.model.data.cohort import Cohort, load_cohort
from kemm.model.data.dataset import SurvivalData, build_data
from kemm.model.errors import DataError, RunError
from kemm.model.run.config import ExperimentConfig, load_config
from kemm.model.run.foldmodel import FoldInputs
from kemm.model.run.registry import fold_model_class
from kemm.model.run.rundir import FoldFiles, RunDir


def _folds(run: RunDir, model: str) -> list[FoldFiles]:
    folds = run.folds_of(model)
    if not folds:
        raise DataError(f"{run.root}: no finished fold of model {model!r} (models with folds: {run.models_with_folds()})")
    return folds


def _common_grid(metas: list[dict]) -> np.ndarray:
    """The mean of the folds' bin ends ``[n_bins]``; the last one is the mean last inner edge."""
    edges_list = [np.asarray(m["edges"], float) for m in metas]
    grid = np.mean([e[1:] for e in edges_list], axis=0)
    grid[-1] = np.mean([e[-2] for e in edges_list]) if len(grid) > 1 else grid[-1]  # last edge = max time + eps
    return grid


def _inputs(cfg: ExperimentConfig, cohort: Cohort, features_dir: Path | str | None, uses_clinical: bool) -> FoldInputs:
    """The new patients as fold models read them (genomic groups come from each fold model)."""
    rf = None
    if cfg.knowledge.report_sources:  # CoxPH covariates, or a network that opted into report fields
        try:
            rf = read_report_fields(cfg.knowledge.cache_dir, cfg.knowledge.report_sources[0])
        except DataError:
            rf = None
    if uses_clinical:  # tabular models read the covariates only: no slides, genomics or embeddings needed
        return FoldInputs(SurvivalData(cohort, strict_knowledge=False), clinical_frame(cohort, cfg.data.clinical, rf))
    dcfg = cfg.data.model_copy(deep=True)
    dcfg.cohort, dcfg.splits_dir = str(cohort.path), None
    if features_dir is not None:
        dcfg.features_dir = str(features_dir)
    dcfg.genomics = dcfg.genomics.model_copy(update={"groups": "none"})
    data = build_data(dcfg, cfg.knowledge, cohort=cohort, require_labels=False)
    data.report_fields = rf
    return FoldInputs(data)


def _check_fold_model(f: FoldFiles, checkpoint: tuple[str, str], metrics: tuple[str, str], name: str) -> None:
    """A fold's model file and metrics must be of the model (registry name, key) its folder and config name."""
    want = (name, f.model)
    for what, got in (("model file", checkpoint), ("metrics.json", metrics)):
        if got != want:
            raise RunError(
                f"{f.dir}: its {what} is of model {got[0]!r} (key {got[1]!r}), but the folder and config say "
                f"{want[0]!r} (key {want[1]!r}); a file was copied in from another model: retrain with "
                "`kemm train --restart` or restore the fold's own files"
            )


def _check_finite(R: np.ndarray, ids: list[str], model: str) -> None:
    """``R`` [folds, N]: a NaN risk is never written or put in a risk group."""
    bad = [cid for cid, ok in zip(ids, np.isfinite(R).all(axis=0)) if not ok]
    if bad:
        raise DataError(
            f"model {model!r}: non-finite risk for {len(bad)} case(s) ({', '.join(map(str, bad[:5]))}); "
            "check those cases' features, genomics and clinical values for NaN/inf"
        )


def predict_run(
    run_dir: Path | str,
    cohort_path: Path | str,
    model: str | None = None,
    features_dir: Path | str | None = None,
) -> pd.DataFrame:
    """Risk and survival for every patient of ``cohort_path`` from every fold of ``model``.

    Returns a frame with ``case_id``, ``risk`` (fold mean), ``risk_std``, ``risk_fold<k>``,
    ``risk_group`` (vs the mean training-fold median risk) and ``surv_t<time>`` columns.
    """
    run = RunDir(run_dir)
    cfg = load_config(run.config_path)
    model = model or cfg.main
    entry = next((m for m in cfg.models if m.key == model), None)
    folds = _folds(run, model)
    metas = [f.read_metrics() for f in folds]
    name = entry.name if entry else metas[0].get("name", model)
    cls = fold_model_class(name)
    fold_models = [cls.load(f) for f in folds]  # before reading data: a refused pickle fails fast
    for f, fm, meta in zip(folds, fold_models, metas):
        _check_fold_model(f, (getattr(fm, "name", name), getattr(fm, "key", model)),
                          (meta.get("name", name), meta.get("model", model)), name)
    dcfg = cfg.data
    cohort = load_cohort(str(cohort_path), dcfg.format, dcfg.columns, dcfg.endpoint, dcfg.cancer_type, require_labels=False)
    inputs = _inputs(cfg, cohort, features_dir, cls.uses_clinical)
    grid = _common_grid(metas)
    ids = cohort.case_ids
    R = np.stack([np.asarray(fm.predict_risk(inputs, ids), dtype=float) for fm in fold_models])
    _check_finite(R, ids, model)
    S = np.mean(np.stack([fm.predict_survival(inputs, ids, grid) for fm in fold_models]).astype(float), axis=0)
    med = float(np.mean([m["train_median_risk"] for m in metas]))
    out = pd.DataFrame({"case_id": ids, "model": model, "risk": R.mean(0), "risk_std": R.std(0)})
    out["risk_group"] = np.where(out["risk"] > med, "high", "low")
    for k, r in zip([m["fold"] for m in metas], R):
        out[f"risk_fold{k}"] = r
    for j, t in enumerate(grid):
        out[f"surv_t{t:.2f}"] = S[:, j]
    return out
