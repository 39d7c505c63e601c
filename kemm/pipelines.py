"""Work that spans both halves: the offline demo.

``run_demo`` generates a synthetic cohort, builds its knowledge with the
``rules`` backend (refined reports per patient, PBK per cancer type), embeds
the statements with the default sentence encoder, and trains KEMM and the
baselines with 5-fold CV.  Each half is called only through its public
functions (``kemm.knowledge``'s API; ``kemm.model`` modules); the model reads the
knowledge through the embedding reader.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kemm.knowledge import build_pbk, build_reports, embed_source, load_encoder
from kemm.model.data.synthetic import SyntheticCohort, make_synthetic_cohort
from kemm.model.run.config import parse_config
from kemm.model.run.train import run_experiment

DEMO_MODELS = ["kemm", "kemm_noknow", "abmil", "snn", "mcat", "text", "coxph"]
REPORT_SOURCE = "demo-reports-rules"
PBK_SOURCE = "demo-pbk-rules"
DEMO_HPARAMS = {"dim": 64, "dropout": 0.1}


def demo_config(work_dir: Path | str = "runs/demo", epochs: int = 10) -> dict:
    """The demo experiment as a config dict (``experiments/demo.yaml`` is this with runs/demo)."""
    w = Path(work_dir)
    models = [{"name": m, "hparams": {} if m == "coxph" else dict(DEMO_HPARAMS)} for m in DEMO_MODELS]
    return {
        "name": "demo",
        "output_dir": str(w / "run"),
        "data": {
            "cohort": str(w / "data" / "cohort.csv"),
            "features_dir": str(w / "data" / "features"),
            "genomics": {"groups": "signatures", "signatures": str(w / "data" / "signatures.csv")},
            "n_folds": 5,
            "split_seed": 0,
            "clinical": ["age", "sex", "stage", "grade"],
        },
        "knowledge": {"report": REPORT_SOURCE, "pbk": PBK_SOURCE, "cache_dir": str(w / "knowledge_cache")},
        "models": models,
        "train": {"epochs": epochs, "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 16, "grad_accum": 1, "seed": 0},
    }


@dataclass
class DemoResult:
    run_dir: Path
    km_plot: Path | None
    seconds: float
    timings: dict[str, float]


def build_demo_knowledge(cohort: SyntheticCohort, cache_dir: Path, log: Callable[[str], None] = print) -> dict[str, float]:
    """Rules-backend knowledge + default-encoder embeddings for a synthetic cohort."""
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    s = build_reports(cohort.reports_csv, REPORT_SOURCE, backend="rules", cache_dir=cache_dir, cancer_type=cohort.cancer_type)
    build_pbk([cohort.cancer_type], PBK_SOURCE, backend="rules", cache_dir=cache_dir)
    t["knowledge_build"] = time.perf_counter() - t0
    log(f"knowledge: refined {s.ok} reports and 1 PBK with the rules backend")
    t0 = time.perf_counter()
    encoder = load_encoder()  # the default encoder, loaded once for both sources
    for src in (REPORT_SOURCE, PBK_SOURCE):
        embed_source(cache_dir, src, encoder=encoder, progress=False)
    t["embed"] = time.perf_counter() - t0
    log(f"knowledge: embedded statements in {t['embed']:.1f}s")
    return t


def run_demo(
    work_dir: Path | str = "runs/demo",
    n_patients: int = 300,
    epochs: int = 10,
    seed: int = 0,
    progress: bool = True,
    restart: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Synthetic cohort -> rules knowledge -> embeddings -> 5-fold CV of KEMM and baselines."""
    t_all = time.perf_counter()
    w = Path(work_dir)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    cohort = make_synthetic_cohort(w / "data", n_patients=n_patients, seed=seed)
    timings["synthetic"] = time.perf_counter() - t0
    log(f"synthetic cohort: {n_patients} patients, {cohort.censored_fraction:.0%} censored -> {w / 'data'}")
    timings.update(build_demo_knowledge(cohort, w / "knowledge_cache", log))
    d = demo_config(w, epochs)
    d["train"]["seed"] = seed
    d["train"]["progress"] = progress
    cfg = parse_config(d, "kemm demo")
    t0 = time.perf_counter()
    run_dir = run_experiment(cfg, restart=restart)
    timings["train"] = time.perf_counter() - t0
    km = run_dir / "km_kemm.png"
    return DemoResult(run_dir, km if km.is_file() else None, time.perf_counter() - t_all, timings)
