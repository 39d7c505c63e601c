"""Cross-validated training: every (fold, model) of an experiment, resumable.

Run directory::

    config.yaml                       resolved config (absolute paths)
    run.json                          identity, kemm version, data coverage, status
    splits/splits_<k>.csv             the folds used (published or generated)
    folds/<model>/fold_<k>/model.pt   checkpoint (weights, spec, hparams, bins, genomic scaler)
    folds/<model>/fold_<k>/predictions.csv   out-of-fold predictions
    folds/<model>/fold_<k>/metrics.json      fold metrics; written last = the fold is done
    predictions.csv                   pooled out-of-fold predictions of every model
    metrics.json, results.csv, results.md, km_<model>.png   (see kemm.model.evaluate)

Evaluation uses the LAST epoch by default.  Optional early stopping monitors an
inner split of the training fold, never the reported fold.  A run interrupted
at any point restarts at the first (fold, model) without ``metrics.json``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from kemm import __version__
from kemm.model.clinical import clinical_frame, read_report_fields
from kemm.model.cohort import DataError
from kemm.model.config import REPORT_FIELD_NAMES, ExperimentConfig, ModelEntry, dump_config, resolve_paths
from kemm.model.data import SurvivalData, build_data
from kemm.model.knowledge_tables import TextTable
from kemm.model.splits import Fold, check_folds, inner_split, load_splits, make_splits, write_splits

log = logging.getLogger(__name__)

COXPH = "coxph"
METRICS = ("c_index", "c_index_ipcw", "ibs", "td_auc")


class RunError(RuntimeError):
    pass


# -- small utilities -------------------------------------------------------------------
def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def atomic_csv(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(n: int | None) -> None:
    """Default: 1 thread on small machines (OpenMP spin-waiting on a shared 2-core box
    is several times slower than one thread for these small models), else half the cores, at most 4."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(n or (1 if cpus <= 2 else min(4, cpus // 2)))


def model_clinical(entry: ModelEntry, cfg: ExperimentConfig) -> list[str]:
    """Covariates a neural model receives: its own ``clinical:`` list, else ``data.model_clinical``."""
    return list(entry.clinical) if entry.clinical is not None else list(cfg.data.model_clinical)


def model_identity(entry: ModelEntry, cfg: ExperimentConfig) -> str:
    d = {"name": entry.name, "hparams": entry.hparams,
         "train": cfg.train.model_dump(mode="json", exclude={"progress", "num_threads"})}
    if entry.clinical is not None:  # only when set, so identities of runs made before the key exist stay valid
        d["clinical"] = entry.clinical
    blob = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fold_dir(run_dir: Path, model: str, k: int) -> Path:
    return run_dir / "folds" / model / f"fold_{k}"


def fold_done(run_dir: Path, model: str, k: int) -> bool:
    return (fold_dir(run_dir, model, k) / "metrics.json").is_file()


# -- experiment setup ------------------------------------------------------------------
@dataclass
class Experiment:
    cfg: ExperimentConfig
    run_dir: Path
    data: SurvivalData
    folds: list[Fold]
    report_fields: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)


def prepare(
    cfg: ExperimentConfig,
    report: TextTable | None = None,
    pbk: TextTable | None = None,
    restart: bool = False,
) -> Experiment:
    """Load data, fix the folds and claim the run directory (checking a resumed run matches)."""
    cfg = resolve_paths(cfg)
    run_dir = Path(cfg.output_dir)
    data = build_data(cfg.data, cfg.knowledge, report=report, pbk=pbk)
    ids = data.cohort.case_ids
    t = data.cohort.table
    if cfg.data.splits_dir:
        folds = load_splits(cfg.data.splits_dir, ids)
    else:
        folds = make_splits(ids, t["time"].to_numpy(), t["event"].to_numpy(), cfg.data.n_folds, cfg.data.split_seed)
    check_folds(folds, t["event"])
    _claim_run_dir(run_dir, cfg, restart)
    write_splits(folds, run_dir / "splits")
    report_fields = None
    wants_fields = any(m.name != COXPH and set(model_clinical(m, cfg)) & set(REPORT_FIELD_NAMES) for m in cfg.models)
    if (any(m.name == COXPH for m in cfg.models) or wants_fields) and cfg.knowledge.report_sources:
        # Covariates come from the first report source (a refined-report source, not derived sentences).
        try:
            report_fields = read_report_fields(cfg.knowledge.cache_dir, cfg.knowledge.report_sources[0])
        except DataError as e:
            if wants_fields:
                raise
            log.warning("coxph: no refined-report fields (%s); using cohort columns only", e)
    data.report_fields = report_fields
    run_json = {
        "identity": cfg.identity(),
        "kemm_version": __version__,
        "coverage": data.coverage(),
        "folds": [{"k": f.k, "n_train": len(f.train), "n_val": len(f.val), "source": f.source} for f in folds],
        "status": "running",
    }
    atomic_write(run_dir / "run.json", json.dumps(run_json, indent=2) + "\n")
    return Experiment(cfg, run_dir, data, folds, report_fields)


def _claim_run_dir(run_dir: Path, cfg: ExperimentConfig, restart: bool) -> None:
    cfg_path = run_dir / "config.yaml"
    if cfg_path.is_file() and not restart:
        from kemm.model.config import load_config

        try:
            old = load_config(cfg_path)
        except Exception as e:
            raise RunError(f"{cfg_path}: unreadable config of an earlier run ({e}); use --restart") from None
        if old.identity() != cfg.identity():
            a, b = old.model_dump(mode="json"), cfg.model_dump(mode="json")
            diffs = [k for k in ("data", "knowledge", "train") if a.get(k) != b.get(k)]
            raise RunError(
                f"{run_dir} holds a run of a different experiment (sections {diffs} differ); "
                "resume only with the same data/knowledge/train settings, choose another output_dir, or pass --restart"
            )
    if restart and (run_dir / "folds").exists():
        import shutil

        shutil.rmtree(run_dir / "folds")
    run_dir.mkdir(parents=True, exist_ok=True)
    # The models list may grow between invocations (ablations add models to one run).
    atomic_write(cfg_path, dump_config(cfg))


# -- training of one neural model on one fold -----------------------------------------
def _loader(ds, batch_size: int, collate, shuffle: bool, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=g, num_workers=0)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, ds, collate, batch_size: int = 32) -> np.ndarray:
    """Hazard logits ``[n, n_bins]`` of every patient of ``ds`` (eval mode, all patches)."""
    model.eval()
    out = [model(b)["logits"].float() for b in _loader(ds, batch_size, collate, False, 0)]
    return torch.cat(out).numpy()


def _risk_and_surv(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from kemm.model.losses import hazards_to_survival, risk_from_logits

    lg = torch.as_tensor(logits)
    return risk_from_logits(lg).numpy(), hazards_to_survival(lg).numpy()


def _c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    from kemm.model.metrics import harrell_c

    try:
        return harrell_c(time, event, risk)
    except Exception:
        return float("nan")


def train_model(
    entry: ModelEntry,
    exp: Experiment,
    train_ids: list[str],
    seed: int,
    edges: np.ndarray,
    scaler,
    inner_ids: list[str] | None = None,
    desc: str = "",
    clinical_scaler=None,
) -> tuple[torch.nn.Module, dict]:
    """Train one model; returns the model (last epoch, or best inner-val epoch) and a log."""
    from kemm.model.losses import nll_surv_loss
    from kemm.model.registry import ModelSpec, build_model

    cfg, data = exp.cfg, exp.data
    tc = cfg.train
    seed_everything(seed)
    names = model_clinical(entry, cfg)
    fd = data.fold(train_ids, inner_ids or train_ids[:1], edges=edges, scaler=scaler, seed=seed,
                   clinical=names, clinical_scaler=clinical_scaler)
    spec = ModelSpec(wsi_dim=data.wsi_dim, omic_dims=data.omic_dims, text_dim=data.text_dim, n_bins=tc.n_bins,
                     clinical_dim=fd.clinical_scaler.dim if fd.clinical_scaler is not None else 0,
                     kinds=list(data.kinds))
    try:
        model = build_model(entry.name, spec, **entry.hparams)
    except (ValueError, TypeError, KeyError) as e:
        raise RunError(f"model {entry.key!r}: {e}") from None
    collate = data.collate()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=tc.lr, weight_decay=tc.weight_decay)
    history: list[dict] = []
    best_state, best_score, bad = None, -np.inf, 0
    bar = tqdm(range(tc.epochs), desc=desc, leave=False, disable=not tc.progress, dynamic_ncols=True)
    for epoch in bar:
        model.train()
        loader = _loader(fd.train, tc.batch_size, collate, True, seed * 1000 + epoch)
        opt.zero_grad(set_to_none=True)
        total, n_steps = 0.0, len(loader)
        for step, batch in enumerate(loader):
            out = model(batch)
            loss = nll_surv_loss(out["logits"], batch["label"], batch["censorship"], alpha=tc.alpha)
            loss = loss + out.get("aux_loss", 0.0)
            (loss / tc.grad_accum).backward()
            if (step + 1) % tc.grad_accum == 0 or step + 1 == n_steps:
                opt.step()
                opt.zero_grad(set_to_none=True)
            total += float(loss.detach())
        rec = {"epoch": epoch, "loss": total / max(n_steps, 1)}
        if inner_ids:
            risk, _ = _risk_and_surv(predict_logits(model, fd.eval, collate))
            rec["inner_c_index"] = _c_index(fd.eval.time, fd.eval.event, risk)
            score = rec["inner_c_index"] if np.isfinite(rec["inner_c_index"]) else -np.inf
            if score > best_score:
                best_score, bad = score, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                rec["best"] = True
            else:
                bad += 1
        history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.3f}")
        if inner_ids and bad >= cfg.train.early_stopping.patience:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, {"history": history, "spec": spec.__dict__}


# -- one fold of one model: train, predict, score, write ------------------------------
def _metrics(train_time, train_event, test_time, test_event, risk, surv_fn) -> dict:
    from kemm.model.metrics import eval_grid, survival_metrics

    try:
        grid = eval_grid(train_time, test_time, test_event, train_event=train_event)
    except Exception as e:
        log.warning("no evaluation grid: %s", e)
        grid = np.empty(0)
    surv = surv_fn(grid) if len(grid) else None
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


def run_fold(exp: Experiment, entry: ModelEntry, fold: Fold) -> dict:
    """Train + evaluate one model on one fold and write its artifacts (metrics.json last)."""
    from kemm.model.losses import make_bins
    from kemm.model.metrics import step_survival

    cfg, data = exp.cfg, exp.data
    t = data.cohort.table
    tr, va = t.loc[fold.train], t.loc[fold.val]
    out_dir = fold_dir(exp.run_dir, entry.key, fold.k)
    seed = cfg.train.seed + fold.k
    t0 = _time.perf_counter()
    edges = np.asarray(make_bins(tr["time"].to_numpy(float), tr["event"].to_numpy(int), n_bins=cfg.train.n_bins), float)
    extra: dict = {}
    if entry.name == COXPH:
        from kemm.model.baselines import CoxPHClinical

        X = clinical_frame(data.cohort, cfg.data.clinical, exp.report_fields)
        try:
            cox = CoxPHClinical(**entry.hparams).fit(X.loc[fold.train], tr["time"], tr["event"])
        except (ValueError, TypeError) as e:
            raise RunError(f"model {entry.key!r}, fold {fold.k}: {e}") from None
        risk = cox.predict_risk(X.loc[fold.val])
        train_risk = cox.predict_risk(X.loc[fold.train])
        surv_edges = cox.predict_survival(X.loc[fold.val], edges[1:])
        surv_fn = lambda grid: cox.predict_survival(X.loc[fold.val], grid)  # noqa: E731
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / ".model.pkl.tmp"
        with open(tmp, "wb") as f:
            pickle.dump({"model": cox, "clinical": list(X.columns), "edges": edges}, f)
        os.replace(tmp, out_dir / "model.pkl")
        extra["covariates"] = list(cox.columns_)
    else:
        fd = data.fold(fold.train, fold.val, edges=edges, n_bins=cfg.train.n_bins, seed=seed,
                       clinical=model_clinical(entry, cfg))
        inner = None
        fit_ids = fold.train
        es = cfg.train.early_stopping
        if es.enabled:
            fit_ids, inner = inner_split(fold.train, tr["time"].to_numpy(), tr["event"].to_numpy(), es.inner_val_fraction, seed)
        model, log_ = train_model(
            entry, exp, fit_ids, seed, edges, fd.scaler, inner_ids=inner, desc=f"{entry.key} fold {fold.k}",
            clinical_scaler=fd.clinical_scaler,
        )
        collate = data.collate()
        logits = predict_logits(model, fd.eval, collate)
        risk, s_bins = _risk_and_surv(logits)
        train_eval = data.dataset(fold.train, edges, fd.scaler, fd.clinical_scaler)
        train_risk, _ = _risk_and_surv(predict_logits(model, train_eval, collate))
        surv_edges = s_bins
        surv_fn = lambda grid: step_survival(s_bins, edges, grid)  # noqa: E731
        ckpt = {
            "name": entry.name,
            "key": entry.key,
            "hparams": entry.hparams,
            "spec": log_["spec"],
            "state_dict": model.state_dict(),
            "edges": edges.tolist(),
            "scaler": fd.scaler.state_dict() if fd.scaler is not None else None,
            "groups": {"names": data.groups.names, "columns": data.groups.columns} if data.groups else None,
            "clinical": fd.clinical_scaler.state_dict() if fd.clinical_scaler is not None else None,
            "kemm_version": __version__,
        }
        atomic_torch_save(ckpt, out_dir / "model.pt")
        extra["history"] = log_["history"]
        extra["clinical"] = fd.clinical_scaler.out_columns_ if fd.clinical_scaler is not None else []
        extra["knowledge_kinds"] = list(data.kinds) if data.text_dim is not None else []
    median = float(np.median(train_risk))
    m = _metrics(tr["time"].to_numpy(float), tr["event"].to_numpy(int), va["time"].to_numpy(float),
                 va["event"].to_numpy(int), risk, surv_fn)
    preds = _prediction_frame(fold.val, fold.k, entry.key, risk, median, surv_edges, edges,
                              va["time"].to_numpy(float), va["event"].to_numpy(int))
    atomic_csv(preds, out_dir / "predictions.csv")
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
        **extra,
    }
    atomic_write(out_dir / "metrics.json", json.dumps(record, indent=2, default=float) + "\n")
    return record


# -- the whole experiment --------------------------------------------------------------
def run_experiment(
    cfg: ExperimentConfig,
    report: TextTable | None = None,
    pbk: TextTable | None = None,
    restart: bool = False,
    on_fold_start: Callable[[str, int], None] | None = None,
    on_fold_done: Callable[[str, int, dict], None] | None = None,
) -> Path:
    """Run every (fold, model) not yet done, then write the summary artifacts. Returns the run dir."""
    from kemm.model.evaluate import summarize_run

    set_threads(cfg.train.num_threads)
    exp = prepare(cfg, report=report, pbk=pbk, restart=restart)
    models = exp.cfg.models
    todo = [(f, m) for f in exp.folds for m in models]
    for f, m in todo:
        p = fold_dir(exp.run_dir, m.key, f.k) / "metrics.json"
        if p.is_file():
            old = json.loads(p.read_text())
            if old.get("model_identity") != model_identity(m, exp.cfg):
                raise RunError(
                    f"{p}: fold {f.k} of model {m.key!r} was trained with other hyperparameters or train settings; "
                    "give the model a new `label`, use another output_dir, or pass --restart"
                )
    pending = [(f, m) for f, m in todo if not fold_done(exp.run_dir, m.key, f.k)]
    if len(pending) < len(todo):
        log.info("resuming: %d of %d (fold, model) runs already done", len(todo) - len(pending), len(todo))
    bar = tqdm(total=len(todo), initial=len(todo) - len(pending), desc="cv", disable=not cfg.train.progress,
               dynamic_ncols=True)
    for f, m in pending:
        bar.set_description(f"cv {m.key} fold {f.k}")
        if on_fold_start:
            on_fold_start(m.key, f.k)
        rec = run_fold(exp, m, f)
        bar.update(1)
        bar.set_postfix(c=f"{rec['c_index']:.3f}" if rec.get("c_index") is not None else "nan")
        if on_fold_done:
            on_fold_done(m.key, f.k, rec)
    bar.close()
    summarize_run(exp.run_dir, exp.cfg)
    rj = json.loads((exp.run_dir / "run.json").read_text())
    rj["status"] = "done"
    atomic_write(exp.run_dir / "run.json", json.dumps(rj, indent=2) + "\n")
    return exp.run_dir
