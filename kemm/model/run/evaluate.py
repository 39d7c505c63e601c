"""Summaries of a run directory: metrics.json, results table, pooled predictions, KM plots.

``summarize_run`` is called at the end of training and by ``kemm evaluate``;
it only reads the per-fold artifacts, so it also works on a partial run
(models with unfinished folds are reported with the folds they have).
Paths and file formats are ``rundir.RunDir``'s.

Imports: numpy, pandas, ``kemm.model.run`` (config, plots, rundir).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from kemm.model.run.config import ExperimentConfig, knowledge_label, load_config
from kemm.model.run.plots import km_risk_groups
from kemm.model.run.rundir import RunDir, write_csv

METRICS = ("c_index", "c_index_ipcw", "ibs", "td_auc")
LABELS = {"c_index": "C-index", "c_index_ipcw": "IPCW C", "ibs": "IBS", "td_auc": "td-AUC"}


def _mean_std(vals: list[float | None]) -> tuple[float, float, int]:
    x = np.array([v for v in vals if v is not None and np.isfinite(v)], float)
    if len(x) == 0:
        return float("nan"), float("nan"), 0
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0, len(x)


def collect_metrics(run_dir: Path, models: list[str]) -> dict:
    """``{model: {"folds": [per-fold metrics], "mean": {...}, "std": {...}, "n_folds": k}}``."""
    out = {}
    run = RunDir(run_dir)
    for m in models:
        recs = run.fold_records(m)
        if not recs:
            continue
        mean, std = {}, {}
        for k in METRICS:
            mean[k], std[k], _ = _mean_std([r.get(k) for r in recs])
        out[m] = {
            "folds": [{k: r.get(k) for k in ("fold", "n_train", "n_val", "train_median_risk", "seconds", *METRICS)} for r in recs],
            "mean": mean,
            "std": std,
            "n_folds": len(recs),
        }
    return out


def _fmt(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}"


def results_table(metrics: dict) -> pd.DataFrame:
    """One row per model: ``mean ± std`` strings per metric plus numeric columns."""
    rows = []
    for m, d in metrics.items():
        row = {"model": m, "folds": d["n_folds"]}
        for k in METRICS:
            row[LABELS[k]] = _fmt(d["mean"][k], d["std"][k])
        for k in METRICS:
            row[f"{k}_mean"] = d["mean"][k]
            row[f"{k}_std"] = d["std"][k]
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    cols = ["model", "folds", *[LABELS[k] for k in METRICS]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def summarize_run(run_dir: Path | str, cfg: ExperimentConfig | None = None, km_models: list[str] | None = None) -> dict:
    """(Re)write metrics.json, results.csv/.md, predictions.csv, km.json and km_<model>.png of a run."""
    run = RunDir(run_dir)
    cfg = cfg or load_config(run.config_path)
    models = [m.key for m in cfg.models]
    # Models trained in this run dir by an earlier invocation (an ablation) are kept too.
    models += [m for m in run.models_with_folds() if m not in models]
    metrics = collect_metrics(run.root, models)
    run.write_json(run.metrics_path, metrics)
    table = results_table(metrics)
    write_csv(table, run.results_csv)
    warnings = run.run_warnings()
    run.write_text(run.results_md, to_markdown(table) + "".join(f"\nwarning: {w}\n" for w in warnings))
    frames = [df for m in metrics for df in run.fold_predictions(m)]
    km = {}
    if frames:
        preds = pd.concat(frames, ignore_index=True)
        write_csv(preds, run.predictions_path)
        for m in km_models if km_models is not None else list(metrics):
            sub = preds[preds["model"] == m]
            if len(sub):
                k = knowledge_label(cfg, m)
                km[m] = km_risk_groups(sub, run.km_png(m), title=f"{cfg.name}: {m}\nknowledge: {k}",
                                       legend_title=f"{m} @ {k}" if not k.startswith("none") else m)
    summary = {"metrics": metrics, "km": km, "warnings": warnings, "main": cfg.main if cfg.main in metrics else next(iter(metrics), None)}
    run.write_json(run.km_json, km)
    return summary


def partial_run_warning(run_dir: Path | str, metrics: dict | None = None) -> str | None:
    """One line when models of a run have different or missing folds (their means cover other patients)."""
    run = RunDir(run_dir)
    try:
        total = len(run.read_run_json().get("folds") or [])
    except (OSError, ValueError):
        total = 0
    if metrics is None:
        cfg = load_config(run.config_path)
        metrics = collect_metrics(run.root, [m.key for m in cfg.models])
    counts = {m: d["n_folds"] for m, d in metrics.items()}
    total = max([total, *counts.values()]) if counts else total
    short = {m: n for m, n in counts.items() if n < total}
    if not short:
        return None
    parts = ", ".join(f"{m} {n} of {total}" for m, n in short.items())
    return (f"warning: {run.root} is a partial run ({parts} folds finished): those means cover fewer patients "
            "than the others and are not comparable; resume with `kemm train CONFIG` (same --output-dir)")


def load_run(run_dir: Path | str) -> tuple[ExperimentConfig, dict]:
    """The config and the per-model metrics of a run directory."""
    run = RunDir(run_dir)
    if not run.is_run():
        raise FileNotFoundError(f"{run.root}: not a run directory (no config.yaml); `kemm train` writes one")
    cfg = load_config(run.config_path)
    return cfg, collect_metrics(run.root, [m.key for m in cfg.models])
