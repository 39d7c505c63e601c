"""Scale and speed benchmark of kemm (issue 7): one command regenerates every figure.

    .venv/bin/python experiments/bench/run_bench.py [--quick] [--only model|loader|knowledge]

writes ``experiments/bench/results.json`` and ``experiments/bench/RESULTS.md`` (``--out-dir``
to write elsewhere; with ``--only`` the other figures of an existing results.json are kept).

Figures, each measured in one run on this machine:

1. ``model``: one training step (forward + backward + Adam step) of KEMM (32 knowledge
   tokens, 6 genomic groups), ABMIL, MCAT and a TransMIL-style layer on one bag of N
   patches of 1024-d, N = 1k, 10k, 50k, 100k. Each (model, N) runs in a fresh subprocess:
   peak memory = ``ru_maxrss`` at the end minus ``ru_maxrss`` after the imports (so it
   includes the bag itself, the model, activations and optimizer state). Time = the
   fastest of the timed steps after one warm-up step (the median is kept too). The
   TransMIL layer is quadratic: a size whose extrapolated cost exceeds the budget is
   skipped, with the estimate.
2. ``loader``: patients/s of one training epoch of KEMM on a synthetic cohort with
   10k-patch bags read from disk (``.pt`` / ``.h5``, float32 / float16), DataLoader with
   0 and 2 workers; plus read-only bags/s per storage layout.
3. ``knowledge``: rules backend reports/s on all real reports, the cached rebuild (time,
   generated count), and statements/s of the default sentence encoder per batch size.

``--quick`` runs tiny sizes in-process (no memory figure) so that the smoke test finishes
in seconds; its numbers are not the benchmark's.
"""
from __future__ import annotations

import argparse
import json
import re
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HERE = Path(__file__).resolve().parent
REPORTS_DIR = ROOT.parent / "shared" / "data" / "raw" / "tcga-path-report" / "Reports"
FIGURES = ("model", "loader", "knowledge")

# Figure 1 configuration.
MODEL_SIZES = [1_000, 10_000, 50_000, 100_000]
QUICK_SIZES = [256, 1024]
WSI_DIM = 1024
N_REPORT, N_PBK = 16, 16  # 32 knowledge tokens
OMIC_DIMS = [100] * 6
TEXT_DIM = 384
# name -> (registry name, hyperparameters, note)
MODEL_VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "abmil": ("abmil", {}, "gated-attention MIL"),
    "kemm": ("kemm", {}, "KEMM, 32 knowledge tokens, streaming KECM (folded projections)"),
    "kemm_ckpt": ("kemm", {"checkpoint_chunks": True}, "KEMM with checkpoint_chunks=True"),
    "kemm_projected": ("kemm", {}, "KEMM with per-chunk key/value projection (the pre-optimisation path)"),
    "mcat": ("mcat", {}, "MCAT-style genomic co-attention"),
    "transmil": ("transmil", {}, "TransMIL-style full self-attention layer (O(N^2))"),
}
TRANSMIL_BUDGET_S = 300.0  # per training step
MEM_BUDGET_MB = 12 * 1024


# --------------------------------------------------------------------------- helpers
def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux/macOS
        return []


def maxrss_mb() -> float:
    """Peak resident set of this process so far, MiB (Linux reports KiB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float] | None:
    """Least squares ``y = a + b x`` -> slope, intercept and R^2 (None with < 2 points)."""
    import numpy as np

    if len(xs) < 2:
        return None
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    b, a = np.polyfit(x, y, 1)
    ss_res = float(np.sum((y - (a + b * x)) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {"slope": float(b), "intercept": float(a), "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


# --------------------------------------------------------------------------- figure 1
def make_model_batch(n: int, wsi_dim: int = WSI_DIM, seed: int = 0) -> dict:
    """One patient with ``n`` patches, 6 genomic groups, 16 report + 16 PBK statements."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return {
        "wsi": torch.randn(1, n, wsi_dim, generator=g),
        "wsi_mask": torch.ones(1, n, dtype=torch.bool),
        "omics": [torch.randn(1, d, generator=g) for d in OMIC_DIMS],
        "omics_mask": torch.ones(1, dtype=torch.bool),
        "report": torch.randn(1, N_REPORT, TEXT_DIM, generator=g),
        "report_mask": torch.ones(1, N_REPORT, dtype=torch.bool),
        "pbk": torch.randn(1, N_PBK, TEXT_DIM, generator=g),
        "pbk_mask": torch.ones(1, N_PBK, dtype=torch.bool),
        "label": torch.tensor([1]),
        "censorship": torch.tensor([0.0]),
    }


def build_variant(variant: str, wsi_dim: int = WSI_DIM):
    """The model of a figure-1 variant (``kemm_projected`` forces the per-chunk projection path)."""
    from kemm.model.nn import kecm
    from kemm.model.nn.registry import ModelSpec, build_model

    name, hp, _ = MODEL_VARIANTS[variant]
    spec = ModelSpec(wsi_dim=wsi_dim, omic_dims=OMIC_DIMS, text_dim=TEXT_DIM, n_bins=4)
    model = build_model(name, spec, **hp)
    if variant == "kemm_projected":
        for mod in model.modules():
            if isinstance(mod, kecm.StreamingCrossAttention):
                mod.use_folded = lambda n_queries: False  # type: ignore[method-assign]
    return model


def train_step_fn(model, batch: dict) -> Callable[[], float]:
    """A closure running one training step (zero_grad, forward, NLL + aux loss, backward, Adam)."""
    import torch

    from kemm.model.nn.losses import nll_surv_loss

    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    model.train()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        out = model(batch)
        loss = nll_surv_loss(out["logits"], batch["label"], batch["censorship"]) + out["aux_loss"]
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def time_steps(step: Callable[[], float], reps: int, slow_s: float = 20.0) -> dict[str, Any]:
    """One warm-up step, then ``reps`` timed ones (1 if the warm-up took over ``slow_s``)."""
    t0 = time.perf_counter()
    step()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(1 if warm > slow_s else reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"time_s": min(times), "time_median_s": statistics.median(times), "times_s": [round(t, 4) for t in times],
            "warmup_s": round(warm, 4)}


def model_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Measure one (variant, N) in this process (run in a fresh subprocess for memory)."""
    import torch

    import kemm.model.nn.losses  # noqa: F401  (imports before the baseline)
    import kemm.model.nn.registry  # noqa: F401

    _set_threads(cfg["threads"])
    base = maxrss_mb()
    torch.manual_seed(0)
    model = build_variant(cfg["variant"], cfg["wsi_dim"])
    batch = make_model_batch(cfg["n"], cfg["wsi_dim"])
    res = time_steps(train_step_fn(model, batch), cfg["reps"])
    peak = maxrss_mb()
    res.update(
        peak_mb=round(peak - base, 1),
        peak_process_mb=round(peak, 1),
        baseline_mb=round(base, 1),
        bag_mb=round(cfg["n"] * cfg["wsi_dim"] * 4 / 2**20, 1),
        n_params=sum(p.numel() for p in model.parameters()),
    )
    return res


def _run_subprocess(cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"]), MKL_NUM_THREADS=str(cfg["threads"]))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_model-worker", json.dumps(cfg)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        return {"skipped": f"timeout after {timeout:.0f} s"}
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {p.returncode}: {' | '.join(tail)}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _transmil_skip(n: int, done: dict[int, dict], n_heads: int = 4) -> str | None:
    """Skip reason when the quadratic layer's extrapolated cost exceeds the budget."""
    # Attention scores, softmax output, dropout mask and gradient: ~4 [H, N, N] float32 tensors.
    est_mb = 4 * n_heads * n * n * 4 / 2**20
    ok = [(m, r) for m, r in done.items() if "time_s" in r]
    est_s = None
    if ok:
        m0, r0 = max(ok)
        est_s = r0["time_s"] * (n / m0) ** 2
    if est_mb > MEM_BUDGET_MB or (est_s is not None and est_s > TRANSMIL_BUDGET_S):
        t = f"~{est_s:.0f} s/step" if est_s is not None else "time n/a"
        return (f"skipped: O(N^2) > budget (est. {t}, ~{est_mb / 1024:.0f} GiB attention; budget "
                f"{TRANSMIL_BUDGET_S:.0f} s/step, {MEM_BUDGET_MB / 1024:.0f} GiB)")
    return None


def figure_model(quick: bool, threads: int, log: Callable[[str], None]) -> dict[str, Any]:
    sizes = QUICK_SIZES if quick else MODEL_SIZES
    wsi_dim = 64 if quick else WSI_DIM
    variants = list(MODEL_VARIANTS)
    rows: dict[str, dict[int, dict]] = {v: {} for v in variants}
    for n in sizes:  # sizes outer, models inner: a load burst hits every model of one size alike
        for v in variants:
            if v == "transmil":
                reason = _transmil_skip(n, rows[v])
                if reason:
                    rows[v][n] = {"skipped": reason}
                    log(f"  {v:15s} N={n:>7,d}  {reason}")
                    continue
            cfg = {"variant": v, "n": n, "wsi_dim": wsi_dim, "threads": threads, "reps": 3 if n <= 10_000 else 2}
            if quick:
                import torch

                _set_threads(threads)
                torch.manual_seed(0)
                r = time_steps(train_step_fn(build_variant(v, wsi_dim), make_model_batch(n, wsi_dim)), 1)
                r["peak_mb"] = None  # in-process: ru_maxrss is monotonic, no per-config figure
            else:
                r = _run_subprocess(cfg, timeout=900)
            rows[v][n] = r
            log(f"  {v:15s} N={n:>7,d}  " + (f"{r['time_s']:.3f} s/step, peak {r.get('peak_mb')} MB"
                                              if "time_s" in r else str(r)))
    # Ratios to ABMIL and memory slopes.
    for v in variants:
        for n, r in rows[v].items():
            a = rows["abmil"].get(n, {})
            if "time_s" in r and "time_s" in a:
                r["time_vs_abmil"] = round(r["time_s"] / a["time_s"], 3)
                r["time_median_vs_abmil"] = round(r["time_median_s"] / a["time_median_s"], 3)
    mem = {}
    for v in variants:
        pts = [(n, r["peak_mb"]) for n, r in rows[v].items() if r.get("peak_mb") is not None]
        fit = linear_fit([p[0] / 1000 for p in pts], [p[1] for p in pts]) if len(pts) >= 3 else None
        if fit:
            mem[v] = {"mb_per_1k_patches": round(fit["slope"], 2), "intercept_mb": round(fit["intercept"], 1),
                      "r2": round(fit["r2"], 5), "points": len(pts)}
    targets = _model_targets(rows, mem, sizes, quick)
    return {
        "config": {"sizes": sizes, "wsi_dim": wsi_dim, "knowledge_tokens": N_REPORT + N_PBK, "omic_dims": OMIC_DIMS,
                   "text_dim": TEXT_DIM, "batch": 1, "dim": 256, "n_heads": 4, "chunk_size": 4096, "threads": threads,
                   "variants": {v: MODEL_VARIANTS[v][2] for v in variants},
                   "step": "zero_grad + forward + NLL loss + backward + Adam step, train mode (dropout on)",
                   "time": "fastest timed step after one warm-up (median kept as time_median_s)",
                   "memory": "ru_maxrss at the end minus ru_maxrss after imports, fresh subprocess per config "
                             "(includes the 4 MB/1k-patch input bag, model, activations, optimizer state)"},
        "rows": {v: {str(n): r for n, r in rows[v].items()} for v in variants},
        "memory_fit": mem,
        "targets": targets,
    }


def _model_targets(rows, mem, sizes, quick) -> dict[str, Any]:
    n_mid = 50_000 if 50_000 in sizes else sizes[-1]
    n_big = 100_000 if 100_000 in sizes else sizes[-1]
    k, a = rows["kemm"].get(n_mid, {}), rows["abmil"].get(n_mid, {})
    out: dict[str, Any] = {}
    if "time_s" in k and "time_s" in a:
        ratio = k["time_s"] / a["time_s"]
        out["kemm_time_vs_abmil"] = {"n": n_mid, "ratio": round(ratio, 3), "target": "<= 1.5", "met": ratio <= 1.5,
                                     "ratio_median": round(k["time_median_s"] / a["time_median_s"], 3)}
    if "kemm" in mem:
        r2 = mem["kemm"]["r2"]
        out["kemm_memory_linear"] = {"mb_per_1k_patches": mem["kemm"]["mb_per_1k_patches"], "r2": r2,
                                     "target": "linear in N (R^2 >= 0.99)", "met": r2 >= 0.99}
    kb = rows["kemm"].get(n_big, {})
    if kb.get("peak_process_mb") is not None:
        out["kemm_100k_trains_under_4GiB"] = {"n": n_big, "peak_process_mb": kb["peak_process_mb"],
                                              "peak_above_imports_mb": kb["peak_mb"], "target": "< 4096 MB (whole process)",
                                              "met": kb["peak_process_mb"] < 4096}
    if quick:
        for v in out.values():
            v["note"] = "quick mode: tiny sizes, not the benchmark"
    return out


# --------------------------------------------------------------------------- figure 2
LOADER_LAYOUTS = {  # name -> (suffix, dtype, chunk_rows, compression)
    "pt-float32": (".pt", "float32", None, None),
    "h5-float32": (".h5", "float32", None, None),
    "pt-float16": (".pt", "float16", None, None),
    "h5-float16": (".h5", "float16", None, None),
    "h5-float16-chunked": (".h5", "float16", 1024, None),
    "h5-float16-gzip": (".h5", "float16", 1024, "gzip"),
}
TRAIN_LAYOUTS = ["pt-float32", "h5-float32", "pt-float16", "h5-float16"]


def _synthetic_features(work: Path, n_patients: int, patches: int, wsi_dim: int, log) -> Any:
    from kemm.model.data.synthetic import make_synthetic_cohort

    root = work / f"cohort_{n_patients}x{patches}x{wsi_dim}"
    meta = root / "synthetic.json"
    if meta.is_file():
        from kemm.model.data.synthetic import SyntheticCohort

        m = json.loads(meta.read_text())
        return SyntheticCohort(Path(m["root"]), Path(m["cohort_csv"]), Path(m["reports_csv"]), Path(m["features_dir"]),
                               Path(m["signatures_csv"]), Path(m["truth_csv"]), m["cancer_type"], int(m["n_patients"]),
                               float(m["censored_fraction"]))
    if root.exists():
        shutil.rmtree(root)
    log(f"  generating {n_patients} patients x {patches} patches x {wsi_dim}-d under {root}")
    return make_synthetic_cohort(root, n_patients=n_patients, seed=0, wsi_dim=wsi_dim, patches=(patches, patches),
                                 multi_slide_fraction=0.0, wsi_coverage=1.0)


def _survival_data(coh, features_dir: Path, text_dim: int):
    from kemm.model.run.config import DataConfig, GenomicsConfig, KnowledgeConfig
    from kemm.model.data.dataset import build_data
    from kemm.model.data.synthetic import truth_knowledge

    report, pbk = truth_knowledge(coh, dim=text_dim)
    dcfg = DataConfig(cohort=str(coh.cohort_csv), features_dir=str(features_dir), cache_bags=False,
                      genomics=GenomicsConfig(groups="signatures", signatures=str(coh.signatures_csv)))
    return build_data(dcfg, KnowledgeConfig(), report=report, pbk=pbk)


def _epoch(data, workers: int, train: bool, seed: int = 0) -> dict[str, Any]:
    """One pass over every patient (batch 1): KEMM training if ``train`` else loading only."""
    import torch
    from torch.utils.data import DataLoader

    from kemm.model.nn.registry import ModelSpec

    ids = data.cohort.case_ids
    fd = data.fold(ids, ids[:2], n_bins=4, seed=seed)
    loader = DataLoader(fd.train, batch_size=1, shuffle=True, collate_fn=data.collate(), num_workers=workers,
                        generator=torch.Generator().manual_seed(seed))
    step = None
    if train:
        from kemm.model.nn.registry import build_model

        torch.manual_seed(seed)
        model = build_model("kemm", ModelSpec(wsi_dim=data.wsi_dim, omic_dims=data.omic_dims, text_dim=data.text_dim))
        opt = torch.optim.Adam(model.parameters(), lr=2e-4)
        from kemm.model.nn.losses import nll_surv_loss

        def step(batch):
            opt.zero_grad(set_to_none=True)
            out = model(batch)
            loss = nll_surv_loss(out["logits"], batch["label"], batch["censorship"]) + out["aux_loss"]
            loss.backward()
            opt.step()

        model.train()
    t0 = time.perf_counter()
    t_wait = 0.0
    n = 0
    it = iter(loader)
    while True:
        tw = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        t_wait += time.perf_counter() - tw
        if step is not None:
            step(batch)
        n += len(batch["case_id"])
    dt = time.perf_counter() - t0
    return {"patients": n, "seconds": round(dt, 3), "patients_per_s": round(n / dt, 3),
            "data_wait_s": round(t_wait, 3), "data_wait_fraction": round(t_wait / dt, 3)}


def figure_loader(quick: bool, threads: int, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from kemm.model.data.bags import BagStore
    from kemm.model.data.bags import convert_features_dir

    _set_threads(threads)
    n_patients, patches, wsi_dim = (4, 500, 64) if quick else (16, 10_000, WSI_DIM)
    coh = _synthetic_features(work, n_patients, patches, wsi_dim, log)
    layouts: dict[str, Any] = {}
    dirs: dict[str, Path] = {}
    for name, (suffix, dtype, chunk, comp) in LOADER_LAYOUTS.items():
        d = coh.root / f"features_{name}"
        convert_features_dir(coh.features_dir, d, suffix, dtype, chunk, comp)
        dirs[name] = d
        size = sum(p.stat().st_size for p in d.iterdir())
        import pandas as pd

        slides = {c: [s] for c, s in pd.read_csv(coh.cohort_csv)[["case_id", "slide_id"]].itertuples(index=False)}
        store = BagStore(d, slides)
        for c in slides:  # warm the page cache, as a second epoch would find it
            store.load(c)
        t0 = time.perf_counter()
        for c in slides:
            store.load(c)
        dt = time.perf_counter() - t0
        layouts[name] = {"disk_mb": round(size / 2**20, 1), "bags_per_s": round(len(slides) / dt, 2),
                         "mb_per_s_read": round(size / 2**20 / dt, 1), "ms_per_bag": round(1000 * dt / len(slides), 2)}
        log(f"  read {name:20s} {layouts[name]}")
    train: dict[str, Any] = {}
    for name in (TRAIN_LAYOUTS[::3] if quick else TRAIN_LAYOUTS):
        data = _survival_data(coh, dirs[name], TEXT_DIM)
        for workers in (0, 2):
            r = _epoch(data, workers, train=True)
            train[f"{name}/workers={workers}"] = r
            log(f"  train {name:12s} workers={workers}  {r}")
    load_only = {}
    for workers in (0, 2):
        load_only[f"h5-float16/workers={workers}"] = _epoch(_survival_data(coh, dirs["h5-float16"], TEXT_DIM), workers, False)
    return {
        "config": {"patients": n_patients, "patches_per_bag": patches, "wsi_dim": wsi_dim, "model": "kemm (32-ish "
                   "knowledge tokens from synthetic truth tables, 6 genomic groups)", "batch": 1, "threads": threads,
                   "cache_bags": False, "work_dir": str(coh.root),
                   "page_cache": "files were just written (and read once): reads come from the page cache, not the disk"},
        "read": layouts,
        "train": train,
        "load_only": load_only,
    }


# --------------------------------------------------------------------------- figure 3
def figure_knowledge(quick: bool, threads: int, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from kemm.knowledge import build_reports, merge_duplicate_cases, read_reports

    _set_threads(threads)
    files = sorted(REPORTS_DIR.glob("*.csv"))
    if not files:
        return {"skipped": f"no real reports under {REPORTS_DIR}"}
    if quick:
        files = files[:1]
    cache = work / "knowledge_cache"
    if cache.exists():
        shutil.rmtree(cache)
    from kemm.knowledge import InputError

    dropped: dict[str, int] = {}
    try:
        for p in files:
            read_reports(p)
    except InputError:  # an older reader refused a whole file for one non-TCGA id: read filtered copies
        files, dropped = _tcga_rows_only(files, work / "reports_tcga_only")
    t0 = time.perf_counter()
    inputs = []
    for p in files:
        inputs += read_reports(p)
    inputs = merge_duplicate_cases(inputs)
    t_read = time.perf_counter() - t0
    limit = 40 if quick else None
    n = min(len(inputs), limit or len(inputs))
    s1 = build_reports([str(p) for p in files], "bench-rules", backend="rules", cache_dir=cache, limit=limit)
    log(f"  rules build: {n} reports in {s1.elapsed_s:.2f} s")
    t0 = time.perf_counter()
    s2 = build_reports([str(p) for p in files], "bench-rules", backend="rules", cache_dir=cache, limit=limit)
    t_rebuild = time.perf_counter() - t0
    log(f"  cached rebuild: {t_rebuild:.2f} s, generated {s2.generated}")
    # The extractor alone (no prompt rendering, validation or cache writes).
    from kemm.knowledge import extract_report

    texts = [inp.variables.get("report_text", "") if hasattr(inp, "variables") else "" for inp in inputs[:n]]
    texts = [t for t in texts if t]
    t0 = time.perf_counter()
    for t in texts:
        extract_report(t)
    t_ex = time.perf_counter() - t0
    out = {
        "files": [p.name for p in files],
        "rows_dropped_non_tcga_id": dropped,
        "reports": n,
        "read_inputs_s": round(t_read, 3),
        "build": {**{k: v for k, v in s1.as_dict().items() if k != "failures"}, "reports_per_s": round(n / s1.elapsed_s, 1)},
        "extractor_only": {"reports": len(texts), "seconds": round(t_ex, 3),
                           "reports_per_s": round(len(texts) / t_ex, 1) if t_ex > 0 else None},
        "cached_rebuild": {"seconds": round(t_rebuild, 3), "generated": s2.generated, "cached": s2.cached,
                           "target": "< 2 s and 0 generated", "met": t_rebuild < 2.0 and s2.generated == 0},
    }
    out["embedding"] = _figure_embedding(cache, quick, threads, log)
    return out


def _tcga_rows_only(files: list[Path], dst: Path) -> tuple[list[Path], dict[str, int]]:
    """Copies (under ``dst``, never in the repo) of the report CSVs without rows whose id is no
    TCGA barcode: ``read_reports`` refuses a whole file for one such row (e.g. 'ER-B0GH.pdf')."""
    import csv
    import re

    csv.field_size_limit(2**31 - 1)
    rx = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}", re.I)
    dst.mkdir(parents=True, exist_ok=True)
    out, dropped = [], {}
    for p in files:
        with open(p, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if rx.match(str(r.get("pdf_file_name_path") or "").strip())]
        dropped[p.name] = len(rows) - len(keep)
        q = dst / p.name
        with open(q, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["pdf_file_name_path", "ocr_text"])
            w.writeheader()
            w.writerows(keep)
        out.append(q)
    return out, dropped


def _statements_sample(cache: Path, k: int | None) -> list[str]:
    """Every statement embed_source would encode, thinned evenly to at most ``k``."""
    from kemm.knowledge import SourceCache, record_statements

    recs = SourceCache(cache, "bench-rules").load().records
    sts: list[str] = []
    for rec in sorted(recs.values(), key=lambda r: str(r.case_id)):
        if rec.status == "ok":
            sts += record_statements(rec, "RefinedReport")
    if k is None:
        return sts
    step = max(len(sts) // k, 1)
    return sts[::step][:k]


def _figure_embedding(cache: Path, quick: bool, threads: int, log) -> dict[str, Any]:
    """Statements/s of the default encoder: embed_source's loop, one encode call, and dedup+sort."""
    import numpy as np
    import torch

    from kemm.knowledge import encode_batched, encode_unique, load_encoder

    all_texts = _statements_sample(cache, None)
    texts = _statements_sample(cache, 64 if quick else 512)
    if not texts:
        return {"skipped": "no statements in the built source"}
    t0 = time.perf_counter()
    enc = load_encoder()
    t_load = time.perf_counter() - t0
    enc.encode(texts[:32], batch_size=32)  # warm-up
    ref = None
    paths = {
        "embed_source": lambda bs: encode_batched(enc, texts, bs, False, "bench"),  # embed.py's loop as is
        "single_call": lambda bs: enc.encode(texts, batch_size=bs),  # sentence-transformers sorts by length
        "dedup_sorted": lambda bs: encode_unique(enc, texts, bs, False, "bench"),  # kemm.knowledge.encode_unique, used by embed_source
    }
    sweep: dict[str, dict] = {}
    grid = [(1, bs) for bs in ((16, 32) if quick else (16, 32, 64, 128))]
    if (os.cpu_count() or 1) >= 2 and not quick:
        grid.append((2, 64))
    for th, bs in grid:
        torch.set_num_threads(th)
        row = {}
        for name, fn in paths.items():
            c0, t0 = time.process_time(), time.perf_counter()
            out = fn(bs)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            row[f"{name}_per_s"] = round(len(texts) / dt, 1)
            row[f"{name}_per_cpu_s"] = round(len(texts) / dc, 1)
            if ref is None:
                ref = out
            else:
                row.setdefault("max_abs_diff_vs_first", 0.0)
                row["max_abs_diff_vs_first"] = max(row["max_abs_diff_vs_first"], float(np.abs(out - ref).max()))
        sweep[f"threads={th}/batch={bs}"] = row
        log(f"  embed threads={th} batch {bs}: {row}")
    full = None
    if not quick:  # the whole source, the way embed_source would see it (dedup path only: the others take minutes)
        torch.set_num_threads(1)
        bs = max(sweep.items(), key=lambda kv: kv[1]["dedup_sorted_per_s"])[0].split("batch=")[1]
        c0, t0 = time.process_time(), time.perf_counter()
        encode_unique(enc, all_texts, int(bs), False, "bench")
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        full = {"statements": len(all_texts), "distinct": len(set(all_texts)), "batch": int(bs), "threads": 1,
                "seconds": round(dt, 2), "per_s": round(len(all_texts) / dt, 1), "per_cpu_s": round(len(all_texts) / dc, 1)}
        log(f"  embed whole source with dedup: {full}")
    torch.set_num_threads(threads)
    best = {name: max(r[f"{name}_per_s"] for r in sweep.values()) for name in paths}
    if full is not None:
        best["dedup_sorted_whole_source"] = full["per_s"]
    lengths = [len(t.split()) for t in texts]
    return {"encoder": enc.encoder_id, "statements": len(texts), "distinct": len(set(texts)),
            "source_statements": len(all_texts), "source_distinct": len(set(all_texts)),
            "mean_words": round(float(np.mean(lengths)), 1), "load_s": round(t_load, 2), "sweep": sweep, "best_per_s": best,
            "whole_source_dedup": full, "target": ">= 400 statements/s (best batch size)",
            "met": max(best["dedup_sorted"], best.get("dedup_sorted_whole_source", 0)) >= 400,
            "met_without_dedup": best["embed_source"] >= 400}


# --------------------------------------------------------------------------- report
def render_md(res: dict[str, Any]) -> str:
    L = ["# kemm scale and speed benchmark", ""]
    env = res.get("environment", {})
    L += [f"Last command: `{env.get('command', 'experiments/bench/run_bench.py')}` on {env.get('date', '?')} (each figure keeps its own environment in results.json).",
          f"Machine: {env.get('cpu_count')} CPU cores ({env.get('platform')}), torch {env.get('torch')}, "
          f"{env.get('threads')} torch threads. **No GPU was available: GPU figures are not measured here** "
          "(`experiments/bench/gpu_check.sh` is the prepared one-shot for a CUDA machine).", ""]
    for fig in FIGURES:
        r = res.get("figures", {}).get(fig)
        if not r:
            continue
        la = r.get("loadavg", {})
        L.append(f"Load average (1, 5, 15 min) during figure `{fig}`: start {la.get('start')}, end {la.get('end')} "
                 "(other engineers' jobs share these cores; a load above the core count inflates absolute times).")
    L.append("")
    if "model" in res.get("figures", {}):
        L += _md_model(res["figures"]["model"])
    if "loader" in res.get("figures", {}):
        L += _md_loader(res["figures"]["loader"])
    if "knowledge" in res.get("figures", {}):
        L += _md_knowledge(res["figures"]["knowledge"])
    L += ["## Targets", "", "| target | value | met |", "|---|---|---|"]
    for fig in FIGURES:
        f = res.get("figures", {}).get(fig) or {}
        for name, t in _targets_of(fig, f).items():
            val = {k: v for k, v in t.items() if k not in ("target", "met", "note")}
            L.append(f"| {fig}: {name} ({t.get('target')}) | {json.dumps(val)} | {'yes' if t.get('met') else '**no**'} |")
    L.append("")
    notes = res.get("notes") or NOTES
    if notes:
        L += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(L)


def _targets_of(fig: str, f: dict) -> dict[str, dict]:
    if fig == "model":
        return f.get("targets", {})
    if fig == "knowledge":
        out = {}
        if "cached_rebuild" in f:
            out["cached_rebuild"] = f["cached_rebuild"]
        if isinstance(f.get("embedding"), dict) and "met" in f["embedding"]:
            e = f["embedding"]
            out["embedding"] = {"target": e["target"], "met": e["met"], "best_per_s": e["best_per_s"],
                                "met_without_dedup": e["met_without_dedup"]}
        return out
    return {}


def _fmt_t(r: dict) -> str:
    if "time_s" in r:
        return f"{r['time_s']:.3f}"
    return r.get("skipped") or r.get("error") or "-"


def _md_model(f: dict) -> list[str]:
    c = f["config"]
    sizes = c["sizes"]
    L = [f"## 1. Training step time and peak memory vs bag size ({c['wsi_dim']}-d patches, batch 1)", "",
         f"Step = {c['step']}. Time = {c['time']}. Memory = {c['memory']}.", "",
         "| model | " + " | ".join(f"N={n:,}: s/step (x ABMIL)" for n in sizes) + " |",
         "|---|" + "---|" * len(sizes)]
    for v, rows in f["rows"].items():
        cells = []
        for n in sizes:
            r = rows.get(str(n), {})
            s = _fmt_t(r)
            if "time_vs_abmil" in r:
                s += f" ({r['time_vs_abmil']:.2f}x)"
            cells.append(s)
        L.append(f"| {v} | " + " | ".join(cells) + " |")
    L += ["", "| model | " + " | ".join(f"N={n:,}: peak MB" for n in sizes) + " | MB per 1k patches (R^2) |",
          "|---|" + "---|" * (len(sizes) + 1)]
    for v, rows in f["rows"].items():
        cells = [str(rows.get(str(n), {}).get("peak_mb", "-")) if "time_s" in rows.get(str(n), {}) else "-" for n in sizes]
        m = f["memory_fit"].get(v)
        fit = f"{m['mb_per_1k_patches']} ({m['r2']})" if m else "-"
        L.append(f"| {v} | " + " | ".join(cells) + f" | {fit} |")
    L += ["", "The input bag alone is 4.0 MB per 1k patches (float32, 1024-d) and is included above.",
          "`kemm_projected` is the KECM path before this issue's change (keys and values projected per chunk); "
          "`kemm` folds those projections into the 48 queries (32 knowledge + 16 learned fallback tokens).", ""]
    return L


def _md_loader(f: dict) -> list[str]:
    c = f["config"]
    L = [f"## 2. Training throughput from disk ({c['patients']} synthetic patients x {c['patches_per_bag']:,} patches x "
         f"{c['wsi_dim']}-d, KEMM, batch 1)", "", f"Note: {c['page_cache']}.", "",
         "| storage | workers | patients/s | data wait (share of epoch) |", "|---|---|---|---|"]
    for k, r in f["train"].items():
        layout, w = k.split("/")
        L.append(f"| {layout} | {w.split('=')[1]} | {r['patients_per_s']} | {r['data_wait_s']} s ({r['data_wait_fraction']:.0%}) |")
    L += ["", "Read only (BagStore.load, one bag after another, warm page cache):", "",
          "| storage | MB on disk | bags/s | ms/bag | MB/s |", "|---|---|---|---|---|"]
    for k, r in f["read"].items():
        L.append(f"| {k} | {r['disk_mb']} | {r['bags_per_s']} | {r['ms_per_bag']} | {r['mb_per_s_read']} |")
    L += ["", "Loading + collate only through the DataLoader (h5-float16): " + ", ".join(
        f"{k.split('/')[1]}: {r['patients_per_s']} patients/s" for k, r in f["load_only"].items()), ""]
    return L


def _md_knowledge(f: dict) -> list[str]:
    if "skipped" in f:
        return ["## 3. Knowledge pipeline", "", f["skipped"], ""]
    b, cr, ex = f["build"], f["cached_rebuild"], f["extractor_only"]
    L = ["## 3. Knowledge pipeline (real tcga-path-report reports)", "",
         f"- files: {len(f['files'])} ({', '.join(f['files'])}); {f['reports']} patients' reports "
         f"(reading the CSVs: {f['read_inputs_s']} s)",
         f"- rows dropped because their id is no TCGA barcode (only with a reader that refuses such files): "
         f"{ {k: v for k, v in f.get('rows_dropped_non_tcga_id', {}).items() if v} or 'none'}",
         f"- rules backend, fresh build (render, extract, validate, write cache): {b['reports_per_s']} reports/s "
         f"({b['elapsed_s']:.2f} s; ok {b['ok']}, failed {b['failed']})",
         f"- the extractor alone: {ex['reports_per_s']} reports/s",
         f"- cached rebuild of all reports: {cr['seconds']} s, {cr['generated']} generated, {cr['cached']} cached", ""]
    e = f.get("embedding", {})
    if "sweep" in e:
        L += [f"Embedding {e['statements']} statements ({e['distinct']} distinct, mean {e['mean_words']} words; sampled "
              f"evenly from the source's {e['source_statements']} statements, of which {e['source_distinct']} are distinct) "
              f"with {e['encoder']} (load {e['load_s']} s). Statements/s, wall clock (per CPU-second of this process "
              "in brackets, a contention-free estimate):", "",
              "| threads/batch | embed_source loop | one encode call | dedup + length sort |", "|---|---|---|---|"]
        for k, r in e["sweep"].items():
            cells = [f"{r[f'{n}_per_s']} ({r[f'{n}_per_cpu_s']})" for n in ("embed_source", "single_call", "dedup_sorted")]
            L.append(f"| {k} | " + " | ".join(cells) + " |")
        w = e.get("whole_source_dedup")
        if w:
            L += ["", f"Whole source ({w['statements']} statements, {w['distinct']} distinct) through the dedup path, "
                  f"batch {w['batch']}, {w['threads']} thread: {w['seconds']} s = **{w['per_s']} statements/s** "
                  f"({w['per_cpu_s']} per CPU-second)."]
        L.append("")
    return L


NOTES: list[str] = [
    "No GPU was lent to this run: GPU figures are not measured here. `bash experiments/bench/gpu_check.sh` is the "
    "prepared one-shot (figure 1 on CUDA + one KEMM epoch over 16 x 10k-patch bags from disk, < 5 min); it was dry-run "
    "on CPU only (`KEMM_GPU_CHECK_TINY=1`).",
    "Threads: every figure runs with 1 torch thread. The 2 cores were shared with other engineers' jobs (load average "
    "3-8, see above); `environment.thread_probe` in results.json shows that 2 OpenMP threads then make a small "
    "elementwise op ~50x slower (each barrier waits for a descheduled thread) and GEMM slower too. Absolute times are "
    "inflated by the load; ratios between models of the same size, measured back to back, are the figures to read.",
    "KECM change (kemm/model/kecm.py): with few queries (H*Q < dim + Q: KEMM's 48 tokens, MCAT's 6 groups) the key "
    "and value projections are folded into the queries, so per patch chunk the scores are one GEMM x[c,256] @ "
    "q~[256,H*Q] and the values are projected once after the weighted sum: no per-chunk K/V tensors, no head-split "
    "copies, no masking work when a chunk has no padding. Same parameters and state dict; equal to the projected "
    "path within 1e-5 (tests/model/data/test_bench_equivalence.py). `kemm_projected` is the old path.",
    "TransMIL-style layer: measured at 1k and 10k; 50k and 100k are skipped because the quadratic attention "
    "would need ~150 / ~600 GiB (est. ~20 min / ~70 min per step on this machine).",
    "float16 bags (kemm/model/bagstore.py writes them; bags.py already reads them as float32, no hook needed) halve "
    "the disk and page-cache footprint, but on this machine, where the page cache holds every bag and the CPU is the "
    "bottleneck, the half->float conversion costs more than the bytes saved: keep float32 unless bags come from a "
    "slow disk or do not fit the page cache. Contiguous, uncompressed .h5 reads fastest; row chunking is slightly "
    "slower, gzip ~10x slower.",
    "DataLoader workers=2 are slower than 0 here: the workers compete with the training thread for the same 2 "
    "cores. With workers=0 the data wait is ~25% of the epoch, a large part of it the collate copying each 40 MB bag "
    "into a zero-filled [1, N, D] buffer (now avoided in kemm/model/data/dataset.py `_pad_tokens`).",
    "Real reports: 49 rows of 5 files (BRAIN, LUNG_900, OVARIAN, PANCREAS, UTEROUS_500) have ids that are no TCGA "
    "barcode (e.g. 'ER-B0GH.pdf'). The current `read_reports` turns them into skipped records (the figure reads all "
    "rows); with a reader that refuses such a file the benchmark falls back to copies without those rows (under the "
    "work dir in /tmp, never in the repo) and lists them.",
    "Cached rebuild: ~1.1-1.25 s of it is `sum(ch.isalnum() for ch in joined)` in kemm/knowledge/store/inputs.py over "
    "24 M characters, only to compare with min_chars=50; counting with an early exit at min_chars gives the same "
    "decisions and messages in ~0.02 s (applied).",
    "Embedding: all-MiniLM-L6-v2 costs ~21 MFLOP per token in float32, so 400 statements/s of ~10-token statements "
    "needs ~85 GFLOP/s sustained, out of reach on 2 shared cores when every occurrence is encoded (the embed_source "
    "loop also pads each batch of unsorted texts to its longest). Encoding each distinct statement once, longest "
    "first (kemm.knowledge.encode_unique, used by embed_source, same rows within 2e-7) is what reaches it: the rules source has ~22% "
    "distinct statements.",
    "Applied after these figures were measured: embed_source encodes distinct statements once, longest first "
    "(kemm.knowledge.encode_unique); read_reports stops counting letters at min_chars; a one-bag batch is "
    "passed without a padded copy (kemm/model/data/dataset.py `_pad_tokens`). Rerun the script to measure them in place.",
]


def thread_probe() -> dict[str, Any]:
    """Elementwise and GEMM speed at 1 and 2 threads: shows whether OpenMP threads fight for cores."""
    import torch

    x, a, w = torch.rand(131072), torch.randn(2048, 1024), torch.randn(256, 1024)
    out = {}
    for th in (1, 2):
        torch.set_num_threads(th)
        for _ in range(3):
            torch.sqrt(x)
        t0 = time.perf_counter()
        for _ in range(30):
            torch.sqrt(x)
        t_sqrt = (time.perf_counter() - t0) / 30
        a @ w.T
        t0 = time.perf_counter()
        for _ in range(5):
            a @ w.T
        t_mm = (time.perf_counter() - t0) / 5
        out[f"threads={th}"] = {"sqrt_131k_ms": round(1000 * t_sqrt, 3), "gemm_gflops": round(2 * 2048 * 1024 * 256 / t_mm / 1e9, 1)}
    return out


def environment(threads: int, argv: list[str]) -> dict[str, Any]:
    import torch

    return {"command": "experiments/bench/run_bench.py " + " ".join(argv), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "threads": threads, "cuda": torch.cuda.is_available(),
            "gpu": "not available to this run: GPU figures not measured here", "loadavg_at_start": loadavg(),
            "thread_probe": thread_probe()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, in-process (smoke test)")
    ap.add_argument("--only", choices=FIGURES, action="append", help="run only this figure (repeatable)")
    ap.add_argument("--out-dir", type=Path, default=HERE)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/kemm_bench"), help="synthetic data and caches (never in the repo)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared, oversubscribed machine 2 OpenMP threads are slower, "
                         "see environment.thread_probe in results.json)")
    ap.add_argument("--render", action="store_true", help="only re-render RESULTS.md from results.json")
    ap.add_argument("--_model-worker", dest="model_worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.model_worker:
        print(json.dumps(model_worker(json.loads(args.model_worker))))
        return {}
    if args.render:
        res = json.loads((args.out_dir / "results.json").read_text())
        _write(res, args.out_dir)
        return res
    figs = args.only or list(FIGURES)
    work = args.work_dir / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out_json = args.out_dir / "results.json"
    res: dict[str, Any] = {}
    if args.only and out_json.is_file():
        res = json.loads(out_json.read_text())
    res["environment"] = environment(args.threads, argv)
    _set_threads(args.threads)
    res.setdefault("figures", {})

    def log(msg: str) -> None:
        print(msg, flush=True)

    runners = {
        "model": lambda: figure_model(args.quick, args.threads, log),
        "loader": lambda: figure_loader(args.quick, args.threads, work, log),
        "knowledge": lambda: figure_knowledge(args.quick, args.threads, work, log),
    }
    for fig in figs:
        log(f"figure {fig} (load average {loadavg()})")
        la0, t0 = loadavg(), time.perf_counter()
        r = runners[fig]()
        r["loadavg"] = {"start": la0, "end": loadavg()}
        r["wall_s"] = round(time.perf_counter() - t0, 1)
        r["quick"] = args.quick
        r["environment"] = res["environment"]
        res["figures"][fig] = r
        _write(res, args.out_dir)  # after every figure: a crash keeps what was measured
    return res


def _kept_sections(md: Path) -> str:
    """Sections 4 and later of the current RESULTS.md: written by other scripts (the real-LLM runs,
    ray_overhead.py), never by this one, so a rerun keeps them."""
    if not md.is_file():
        return ""
    m = re.search(r"^## (?:[4-9]|\d\d)\. ", md.read_text(encoding="utf-8"), flags=re.M)
    return "\n" + md.read_text(encoding="utf-8")[m.start():] if m else ""


def _write(res: dict[str, Any], out_dir: Path) -> None:
    # The JSON first: a rendering bug must not lose what was measured.
    md = out_dir / "RESULTS.md"
    for name, render in (("results.json", lambda: json.dumps(res, indent=2, default=str) + "\n"),
                         ("RESULTS.md", lambda: render_md(res) + _kept_sections(md))):
        text = render()
        p = out_dir / name
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)


if __name__ == "__main__":
    main()
