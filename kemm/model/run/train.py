"""Cross-validated training: every (fold, model) of an experiment, resumable.

The run directory's layout and file formats are ``rundir.RunDir``'s; each model of a
fold is a ``FoldModel`` (``run/registry.py`` picks the class), so this module never
asks whether it trains a network or a Cox model.  A run interrupted at any point
restarts at the first (fold, model) without ``metrics.json``; finished folds are
never loaded again (their model files are not read on resume). ``run.json`` records the
content identity of every knowledge source read; a resume (or rerun) whose knowledge changed
since folds finished is refused, so no run mixes knowledge generations.

Imports: numpy, pandas, torch, ``kemm.knowledge`` (public API), ``kemm.model.data``,
``kemm.model.run`` (not predict).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

import kemm.knowledge as knowledge
from kemm import __version__
from kemm.model.data.clinical import clinical_frame, read_report_fields
from kemm.model.data.dataset import SurvivalData, build_data
from kemm.model.data.knowledge import TextTable
from kemm.model.data.splits import Fold, check_folds, load_splits, make_splits, write_splits
from kemm.model.errors import DataError, RunError
from kemm.model.nn.losses import make_bins
from kemm.model.run.config import (
    DISPLAY_ONLY,
    REPORT_FIELD_NAMES,
    ExperimentConfig,
    LinearPartConfig,
    ModelEntry,
    dump_config,
    load_config,
    model_clinical,
    resolve_paths,
    setting_differences,
)
from kemm.model.run.evaluate import summarize_run
from kemm.model.run.foldmodel import FoldInputs, FoldModel
from kemm.model.run.metrics import eval_grid, survival_metrics
from kemm.model.run.neural import NeuralFoldModel
from kemm.model.run.progress import FoldProgress
from kemm.model.run.registry import check_models, fold_model_class, new_fold_model
from kemm.model.run.rundir import RunDir

log = logging.getLogger(__name__)


# -- small utilities -------------------------------------------------------------------
def set_threads(n: int | None) -> None:
    """Default: 1 thread on small machines (OpenMP spin-waiting on a shared 2-core box
    is several times slower than one thread for these small models), else half the cores, at most 4."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(n or (1 if cpus <= 2 else min(4, cpus // 2)))


# train settings newer than the first runs, and their defaults
ADDED_TRAIN_DEFAULTS = {"ensemble": 1, "linear_part": LinearPartConfig().model_dump(mode="json")}
ADDED_LINEAR_PART_DEFAULTS = {"knowledge": False}  # keys of train.linear_part newer than its first runs


def model_identity(entry: ModelEntry, cfg: ExperimentConfig) -> str:
    train = entry.train_config(cfg.train).model_dump(mode="json", exclude=set(DISPLAY_ONLY))
    for key, default in ADDED_TRAIN_DEFAULTS.items():  # keys added later: at their default, the identity of older runs
        if train.get(key) == default:
            train.pop(key)
    lp = train.get("linear_part")
    if isinstance(lp, dict):
        for key, default in ADDED_LINEAR_PART_DEFAULTS.items():
            if lp.get(key) == default:
                lp.pop(key)
    d = {"name": entry.name, "hparams": entry.hparams, "train": train}
    if entry.clinical is not None:  # only when set, so identities of runs made before the key existed stay valid
        d["clinical"] = entry.clinical
    blob = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# -- experiment setup ------------------------------------------------------------------
@dataclass
class Experiment:
    cfg: ExperimentConfig
    run: RunDir
    data: SurvivalData
    folds: list[Fold]
    inputs: FoldInputs
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.run.root


def _report_fields(cfg: ExperimentConfig, data: SurvivalData) -> pd.DataFrame | None:
    """Numeric refined-report fields when a model of the run reads them (CoxPH, or a neural opt-in).

    They come from the first report source (a refined-report source, not derived sentences).
    """
    opt_in = any(fold_model_class(m.name) is NeuralFoldModel and set(model_clinical(m, cfg)) & set(REPORT_FIELD_NAMES)
                 for m in cfg.models)
    if not (opt_in or any(fold_model_class(m.name).uses_clinical for m in cfg.models)):
        return None
    if not cfg.knowledge.report_sources:
        return None
    try:
        return read_report_fields(cfg.knowledge.cache_dir, cfg.knowledge.report_sources[0])
    except DataError as e:
        if opt_in:
            raise
        log.warning("coxph: no refined-report fields (%s); using cohort columns only", e)
        return None


def _clinical(cfg: ExperimentConfig, data: SurvivalData) -> pd.DataFrame | None:
    """Raw CoxPH covariates when a model of the run uses them (report fields where a source is set)."""
    if not any(fold_model_class(m.name).uses_clinical for m in cfg.models):
        return None
    return clinical_frame(data.cohort, cfg.data.clinical, data.report_fields)


def prepare(
    cfg: ExperimentConfig,
    report: TextTable | None = None,
    pbk: TextTable | None = None,
    restart: bool = False,
) -> Experiment:
    """Load data, fix the folds and claim the run directory (checking a resumed run matches)."""
    cfg = resolve_paths(cfg)
    run = RunDir(cfg.output_dir)
    data = build_data(cfg.data, cfg.knowledge, report=report, pbk=pbk)
    ids = data.cohort.case_ids
    t = data.cohort.table
    if cfg.data.splits_dir:
        folds = load_splits(cfg.data.splits_dir, ids)
    else:
        folds = make_splits(ids, t["time"].to_numpy(), t["event"].to_numpy(), cfg.data.n_folds, cfg.data.split_seed)
    check_folds(folds, t["event"])
    for w in data.warnings:
        log.warning("%s", w)
    kid = knowledge_identity(cfg, report, pbk)
    _check_same_knowledge(run, kid, restart)  # before claiming: a refused run writes nothing
    _claim_run_dir(run, cfg, restart)
    write_splits(folds, run.splits_dir)
    data.report_fields = _report_fields(cfg, data)
    inputs = FoldInputs(data, _clinical(cfg, data), cfg.train)
    run.write_run_json({
        "identity": cfg.identity(),
        "kemm_version": __version__,
        "knowledge": kid,
        "coverage": data.coverage(),
        "warnings": data.warnings,
        "folds": [{"k": f.k, "n_train": len(f.train), "n_val": len(f.val), "source": f.source} for f in folds],
        "status": "running",
    })
    return Experiment(cfg, run, data, folds, inputs)


def knowledge_identity(cfg: ExperimentConfig, report: TextTable | None, pbk: TextTable | None) -> list[dict]:
    """Per knowledge source read from the cache, the content identity read (``kemm.knowledge.source_identity``).

    Tables given in memory (tests, the synthetic pipeline) have no cache identity and are not listed.
    """
    sources = (cfg.knowledge.report_sources if report is None else []) + (cfg.knowledge.pbk_sources if pbk is None else [])
    try:
        return [knowledge.source_identity(cfg.knowledge.cache_dir, s, cfg.knowledge.encoder) for s in sources]
    except knowledge.KnowledgeError as e:
        raise DataError(str(e)) from None


def _check_same_knowledge(run: RunDir, kid: list[dict], restart: bool) -> None:
    """Finished folds trained on other knowledge must not be mixed with (or reported as) folds on this one."""
    if restart or not run.run_json_path.is_file() or not run.all_fold_records():
        return
    old = run.read_run_json().get("knowledge")
    if old is None:
        if kid:  # a run made before kemm recorded knowledge identities: nothing to compare with
            log.warning("%s records no knowledge identity (an older kemm); cannot check that resumed folds used "
                        "the same knowledge: pass --restart to be sure", run.root)
        return
    before = {s.get("source"): s for s in old}
    now = {s["source"]: s for s in kid}
    for name in sorted(before.keys() | now.keys()):
        a, b = before.get(name), now.get(name)
        if a == b:
            continue
        raise RunError(
            f"{run.root}: knowledge source {name!r} changed since this run's finished folds were trained ({_identity_change(a, b)}); "
            "their results would mix knowledge generations: choose another output_dir, or pass --restart to retrain"
        )


def _identity_change(a: dict | None, b: dict | None) -> str:
    if a is None or b is None:
        return "not read before" if a is None else "no longer read"
    for k in ("records_generation", "embedding_set", "encoder_id", "encoder_weights_sha256", *a):
        if a.get(k) != b.get(k):
            return f"{k} was {str(a.get(k))[:12]}, now {str(b.get(k))[:12]}"
    return "identity differs"


def _claim_run_dir(run: RunDir, cfg: ExperimentConfig, restart: bool) -> None:
    if run.root.is_dir() and not run.config_path.is_file() and any(run.root.iterdir()):
        raise RunError(
            f"output_dir {run.root} is not empty and holds no kemm run (no config.yaml); kemm writes only into a "
            "new or empty folder or one of its own runs: choose another output_dir"
        )
    if run.config_path.is_file() and not restart:
        try:
            old = load_config(run.config_path)
        except Exception as e:
            raise RunError(f"{run.config_path}: unreadable config of an earlier run ({e}); use --restart") from None
        if old.identity() != cfg.identity():
            diffs = setting_differences(old.identity_settings(), cfg.identity_settings())
            raise RunError(
                f"{run.root} holds a run of a different experiment ({'; '.join(diffs)}); "
                "resume only with the same data/knowledge/train settings, choose another output_dir, or pass --restart"
            )
    if restart:
        kept = run.clear_folds()
        if kept:
            log.warning("--restart kept %d file(s) under %s that kemm did not write (e.g. %s)", len(kept),
                        run.folds_root, kept[0])
    run.root.mkdir(parents=True, exist_ok=True)
    # The models list may grow between invocations (ablations add models to one run).
    run.write_text(run.config_path, dump_config(cfg))


# -- one fold of one model: train, predict, score, write ------------------------------
def _metrics(train_time, train_event, test_time, test_event, risk, surv_fn) -> dict:
    try:
        grid = eval_grid(train_time, test_time, test_event, train_event=train_event)
    except Exception as e:  # a fold whose follow-up leaves no grid still gets its C-index
        log.warning("no evaluation grid: %s", e)
        grid = np.empty(0)
    surv = np.asarray(surv_fn(grid), dtype=float) if len(grid) else None
    m = survival_metrics(train_time, train_event, test_time, test_event, risk, surv, grid if len(grid) else None)
    return {k: (float(v) if v is not None and np.isfinite(v) else None) for k, v in m.items()}


def _prediction_frame(ids, fold, model, risk, median, surv_edges, edges, time, event) -> pd.DataFrame:
    df = pd.DataFrame({"case_id": ids, "fold": fold, "model": model, "risk": risk})
    df["train_median_risk"] = median
    df["risk_group"] = np.where(risk > median, "high", "low")
    df["time"] = time
    df["event"] = event
    for j in range(surv_edges.shape[1]):
        df[f"surv_{j + 1}"] = surv_edges[:, j]
    for j in range(surv_edges.shape[1]):
        df[f"edge_{j + 1}"] = edges[j + 1]
    return df


def _finite(risk: np.ndarray, ids: list[str], model: str, k: int) -> np.ndarray:
    """``risk`` [N] when every value is finite; a NaN risk is never written, scored or grouped."""
    risk = np.asarray(risk, dtype=float)
    bad = [cid for cid, r in zip(ids, risk) if not np.isfinite(r)]
    if bad:
        raise RunError(
            f"model {model!r} fold {k}: non-finite risk for {len(bad)} case(s) ({', '.join(map(str, bad[:5]))}); "
            "the model diverged or an input is NaN: lower train.lr, or check those cases' features and genomics"
        )
    return risk


def run_fold(exp: Experiment, entry: ModelEntry, fold: Fold) -> dict:
    """Train + evaluate one model on one fold and write its artifacts (metrics.json last)."""
    cfg, inputs = exp.cfg, exp.inputs
    t = exp.data.cohort.table
    tr, va = t.loc[fold.train], t.loc[fold.val]
    files = exp.run.fold(entry.key, fold.k)
    tc = entry.train_config(cfg.train)  # the experiment's settings with this model's overrides
    seed = tc.seed + fold.k
    t0 = _time.perf_counter()
    edges = np.asarray(make_bins(tr["time"].to_numpy(float), tr["event"].to_numpy(int), n_bins=tc.n_bins), float)
    fm: FoldModel = new_fold_model(entry, cfg, desc=f"{entry.key} fold {fold.k}")
    fm.fit(inputs, fold.train, edges, seed)
    risk = _finite(fm.predict_risk(inputs, fold.val), fold.val, entry.key, fold.k)
    train_risk = _finite(fm.predict_risk(inputs, fold.train), fold.train, entry.key, fold.k)
    surv_edges = fm.predict_survival(inputs, fold.val, edges[1:])  # [n_val, n_bins]: S at each bin's end
    fm.save(files)
    median = float(np.median(train_risk))
    m = _metrics(tr["time"].to_numpy(float), tr["event"].to_numpy(int), va["time"].to_numpy(float),
                 va["event"].to_numpy(int), risk, lambda grid: fm.predict_survival(inputs, fold.val, grid))
    files.write_predictions(_prediction_frame(fold.val, fold.k, entry.key, risk, median, surv_edges, edges,
                                              va["time"].to_numpy(float), va["event"].to_numpy(int)))
    record = {
        "model": entry.key,
        "name": entry.name,
        "fold": fold.k,
        "model_identity": model_identity(entry, cfg),
        "n_train": len(fold.train),
        "n_val": len(fold.val),
        "train_median_risk": median,
        "edges": edges.tolist(),
        "seconds": round(_time.perf_counter() - t0, 2),
        **m,
        **fm.record(),
    }
    files.write_metrics(record)
    return record


# -- the whole experiment --------------------------------------------------------------
def _check_resumable(exp: Experiment) -> None:
    """A finished fold trained with other settings must not be mixed into this run."""
    for f in exp.folds:
        for m in exp.cfg.models:
            files = exp.run.fold(m.key, f.k)
            if files.done and files.read_metrics().get("model_identity") != model_identity(m, exp.cfg):
                raise RunError(
                    f"{files.metrics_path}: fold {f.k} of model {m.key!r} was trained with other hyperparameters or "
                    "train settings; give the model a new `label`, use another output_dir, or pass --restart"
                )


def run_experiment(
    cfg: ExperimentConfig,
    report: TextTable | None = None,
    pbk: TextTable | None = None,
    restart: bool = False,
    on_fold_start: Callable[[str, int], None] | None = None,
    on_fold_done: Callable[[str, int, dict], None] | None = None,
) -> Path:
    """Run every (fold, model) not yet done, then write the summary artifacts. Returns the run dir."""
    exp, pending = start_experiment(cfg, report=report, pbk=pbk, restart=restart)
    total = len(exp.folds) * len(exp.cfg.models)
    prog = FoldProgress(total, total - len(pending), cfg.train.progress)
    for f, m in pending:
        prog.start(f"{m.key} fold {f.k}")
        if on_fold_start:
            on_fold_start(m.key, f.k)
        rec = run_fold(exp, m, f)
        prog.finish(f"{m.key} fold {f.k}", rec.get("c_index"))
        if on_fold_done:
            on_fold_done(m.key, f.k, rec)
    prog.close()
    return finish_experiment(exp)


def start_experiment(
    cfg: ExperimentConfig,
    report: TextTable | None = None,
    pbk: TextTable | None = None,
    restart: bool = False,
) -> tuple[Experiment, list[tuple[Fold, ModelEntry]]]:
    """Check, load and claim an experiment; its (fold, model) runs not yet done, in run order.

    Shared by ``run_experiment`` and the Ray executor (``run/executor.py``), so both resume alike.
    """
    check_models(cfg)  # a typo in the last model must not surface after the others trained
    set_threads(cfg.train.num_threads)
    exp = prepare(cfg, report=report, pbk=pbk, restart=restart)
    _check_resumable(exp)
    todo = [(f, m) for f in exp.folds for m in exp.cfg.models]
    pending = [(f, m) for f, m in todo if not exp.run.fold(m.key, f.k).done]
    if len(pending) < len(todo):
        log.info("resuming: %d of %d (fold, model) runs already done", len(todo) - len(pending), len(todo))
    return exp, pending


def finish_experiment(exp: Experiment) -> Path:
    """The run-level outputs once every fold is done (summary artifacts, run.json status). Returns the run dir."""
    summarize_run(exp.run.root, exp.cfg)
    rj = exp.run.read_run_json()
    rj["status"] = "done"
    exp.run.write_run_json(rj)
    return exp.run.root
