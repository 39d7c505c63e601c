"""Fold-ensembled predictions of a trained run for new patients.

Every fold's checkpoint of one model predicts every patient of the new
cohort; risks are averaged, and survival curves (each fold on its own bins)
are read on one common time grid — the mean of the folds' bin edges — and
averaged.  The new cohort is read with the run's column mapping; labels are
optional.  Genomics are scaled with each fold's training-fold scaler.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kemm.model.clinical import ClinicalScaler, read_report_fields
from kemm.model.cohort import DataError, load_cohort
from kemm.model.config import REPORT_FIELD_NAMES, ExperimentConfig, load_config
from kemm.model.data import SurvivalData, build_data, make_collate
from kemm.model.genomics import GenomicGroups, GenomicScaler


def _fold_dirs(run_dir: Path, model: str) -> list[Path]:
    d = run_dir / "folds" / model
    dirs = sorted((p for p in d.glob("fold_*") if (p / "metrics.json").is_file()), key=lambda p: int(p.name.split("_")[1]))
    if not dirs:
        known = sorted(p.name for p in (run_dir / "folds").iterdir()) if (run_dir / "folds").is_dir() else []
        raise DataError(f"{run_dir}: no finished fold of model {model!r} (models with folds: {known})")
    return dirs


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
    from kemm.model.losses import hazards_to_survival, risk_from_logits
    from kemm.model.metrics import step_survival
    from kemm.model.registry import ModelSpec, build_model
    from kemm.model.train import predict_logits

    run_dir = Path(run_dir)
    cfg: ExperimentConfig = load_config(run_dir / "config.yaml")
    model = model or cfg.main
    entry = next((m for m in cfg.models if m.key == model), None)
    dirs = _fold_dirs(run_dir, model)
    dcfg = cfg.data.model_copy(deep=True)
    dcfg.cohort = str(cohort_path)
    dcfg.splits_dir = None
    if features_dir is not None:
        dcfg.features_dir = str(features_dir)
    cohort = load_cohort(dcfg.cohort, dcfg.format, dcfg.columns, dcfg.endpoint, dcfg.cancer_type, require_labels=False)
    metas = [json.loads((d / "metrics.json").read_text()) for d in dirs]
    edges_list = [np.asarray(m["edges"], float) for m in metas]
    grid = np.mean([e[1:] for e in edges_list], axis=0)
    grid[-1] = np.mean([e[-2] for e in edges_list]) if len(grid) > 1 else grid[-1]  # last edge = max time + eps
    risks, survs = [], []
    name = entry.name if entry else metas[0].get("name", model)
    if name == "coxph":
        from kemm.model.clinical import clinical_frame

        rf = None
        if cfg.knowledge.report_sources:
            try:
                rf = read_report_fields(cfg.knowledge.cache_dir, cfg.knowledge.report_sources[0])
            except DataError:
                rf = None
        X = clinical_frame(cohort, cfg.data.clinical, rf)
        for d in dirs:
            with open(d / "model.pkl", "rb") as f:  # our own artifact, written by `kemm train`
                obj = pickle.load(f)
            risks.append(obj["model"].predict_risk(X))
            survs.append(obj["model"].predict_survival(X, grid))
    else:
        dcfg.genomics = dcfg.genomics.model_copy(update={"groups": "none"})  # groups come from the checkpoint
        data = build_data(dcfg, cfg.knowledge, cohort=cohort, require_labels=False)
        for d in dirs:
            ck = torch.load(d / "model.pt", map_location="cpu", weights_only=True)
            scaler = None
            if ck.get("groups"):
                g = GenomicGroups(ck["groups"]["names"], ck["groups"]["columns"])
                missing = [c for cols in g.columns for c in cols if c not in cohort.table.columns]
                if missing:
                    raise DataError(
                        f"{cohort_path}: genomic column(s) {missing[:5]} used in training are missing "
                        f"({len(missing)} in all); the new cohort needs the same *_rnaseq/_cnv/_mut columns"
                    )
                data = SurvivalData(cohort, g, data.bags, data.report, data.pbk, None, strict_knowledge=False)
                scaler = GenomicScaler.from_state(ck["scaler"])
            spec = ModelSpec(**ck["spec"])
            _check_spec(spec, data, d)
            data.kinds = list(spec.kinds)  # kind ids as in training
            cscaler = ClinicalScaler.from_state(ck["clinical"]) if ck.get("clinical") else None
            if cscaler is not None and set(cscaler.columns) & set(REPORT_FIELD_NAMES) and cfg.knowledge.report_sources:
                data.report_fields = read_report_fields(cfg.knowledge.cache_dir, cfg.knowledge.report_sources[0])
            net = build_model(ck["name"], spec, **ck["hparams"])
            net.load_state_dict(ck["state_dict"])
            ds = data.dataset(cohort.case_ids, None, scaler, cscaler)
            logits = torch.as_tensor(predict_logits(net, ds, make_collate(spec.wsi_dim, spec.omic_dims, spec.text_dim)))
            risks.append(risk_from_logits(logits).numpy())
            survs.append(step_survival(hazards_to_survival(logits).numpy(), np.asarray(ck["edges"]), grid))
    R = np.stack(risks)
    S = np.mean(np.stack(survs), axis=0)
    med = float(np.mean([m["train_median_risk"] for m in metas]))
    out = pd.DataFrame({"case_id": cohort.case_ids, "model": model, "risk": R.mean(0), "risk_std": R.std(0)})
    out["risk_group"] = np.where(out["risk"] > med, "high", "low")
    for k, r in zip([m["fold"] for m in metas], R):
        out[f"risk_fold{k}"] = r
    for j, t in enumerate(grid):
        out[f"surv_t{t:.2f}"] = S[:, j]
    return out


def _check_spec(spec, data: SurvivalData, d: Path) -> None:
    have = {"wsi_dim": data.wsi_dim, "text_dim": data.text_dim}
    for k, v in have.items():
        want = getattr(spec, k)
        if want is not None and v is not None and want != v:
            raise DataError(f"{d}: the model was trained with {k}={want}, the new data give {v}")
