"""What ``--executor ray`` costs on one machine, next to the serial run of the same work (issue 15).

    PYTHONPATH=. python experiments/bench/ray_overhead.py [--cpus 1,2] [--patients 200] [--reports 2000]
        [--report-dir ../shared/data/raw/tcga-path-report/Reports] [--out experiments/bench/ray_overhead.json]

Figures (each arm on the same inputs, back to back, 1 torch thread):

1. training (key ``training_epochs<E>``): a synthetic cohort, 5 folds x (kemm, kemm_noknow, snn, coxph), serial ``run_experiment``
   vs ``run_on_ray`` on a local cluster of ``--cpus`` CPUs; the cluster start is timed on its own;
   results are checked equal (predictions.csv byte for byte).
2. knowledge: the rules backend over ``--reports`` synthetic reports, serial ``build`` vs
   ``--executor ray`` with 1 and 2 replicas (the rules extractor takes ~5 ms a report, so this is
   the worst case for Ray's per-batch cost; an LLM batch takes seconds to minutes).
3. tokens per real report (``--report-dir``): characters / 4 and the all-MiniLM-L6-v2 WordPiece
   count, for the projection in RESULTS.md. Only aggregate numbers are written.

Writes one JSON file; RESULTS.md section 5 is written by hand from it.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kemm.knowledge import api  # noqa: E402
from kemm.model.data.synthetic import make_synthetic_cohort, truth_knowledge  # noqa: E402
from kemm.model.run.config import parse_config  # noqa: E402
from kemm.model.run.executor import run_on_ray  # noqa: E402
from kemm.model.run.train import run_experiment  # noqa: E402

MODELS = ["kemm", "kemm_noknow", "snn", "coxph"]


def _cfg(syn, out: Path, epochs: int):
    hp = {"dim": 64, "dropout": 0.1}
    return parse_config({
        "name": "overhead", "output_dir": str(out),
        "data": {"cohort": str(syn.cohort_csv), "features_dir": str(syn.features_dir), "n_folds": 5,
                 "genomics": {"groups": "signatures", "signatures": str(syn.signatures_csv)}, "clinical": ["age", "sex"]},
        "models": [{"name": m, "hparams": {} if m == "coxph" else hp} for m in MODELS],
        "train": {"epochs": epochs, "batch_size": 16, "progress": False, "num_threads": 1},
    })


def _same_predictions(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("predictions.csv"))
    return bool(files) and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def training(work: Path, cpus: list[int], patients: int, epochs: int) -> dict:
    import ray

    syn = make_synthetic_cohort(work / "syn", n_patients=patients, seed=0, patches=(50, 150), wsi_dim=64)
    rep, pbk = truth_knowledge(syn)
    t0 = time.perf_counter()
    serial = run_experiment(_cfg(syn, work / "serial", epochs), report=rep, pbk=pbk)
    serial_s = time.perf_counter() - t0
    fold_s = [json.loads(p.read_text())["seconds"] for p in serial.glob("folds/*/fold_*/metrics.json")]
    out = {"patients": patients, "folds": 5, "models": MODELS, "epochs": epochs, "fold_runs": len(fold_s),
           "serial_s": round(serial_s, 2), "serial_fold_s_sum": round(sum(fold_s), 2), "ray": []}
    for n in cpus:
        t0 = time.perf_counter()
        ray.init(num_cpus=n, include_dashboard=False, logging_level="WARNING")
        init_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = run_on_ray([_cfg(syn, work / f"ray{n}", epochs)], report=rep, pbk=pbk, progress=False)
        run_s = time.perf_counter() - t0
        ray.shutdown()
        out["ray"].append({"cpus": n, "cluster_start_s": round(init_s, 2), "sweep_s": round(run_s, 2),
                           "sweep_over_serial": round(run_s / serial_s, 3),
                           "start_plus_sweep_over_serial": round((init_s + run_s) / serial_s, 3),
                           "same_predictions": _same_predictions(serial, res.run_dirs[0])})
    return out


def _write_reports(path: Path, n: int) -> None:
    text = ("Urinary bladder, transurethral resection: invasive urothelial carcinoma, high grade, invading the "
            "muscularis propria (pT2a). Lymphovascular invasion present. Margins negative. {i} of 12 lymph nodes. ")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pdf_file_name_path", "ocr_text"])
        for i in range(n):
            w.writerow([f"TCGA-ZZ-{i:04d}.X.PDF", text.format(i=i % 12) * (1 + i % 5)])


def knowledge(work: Path, n_reports: int, replicas: list[int]) -> dict:
    import ray

    work.mkdir(parents=True, exist_ok=True)
    reports = work / "reports.csv"
    _write_reports(reports, n_reports)
    t0 = time.perf_counter()
    s = api.build_reports(reports, "r", cache_dir=work / "kc-serial", cancer_type="BLCA", batch_size=16)
    serial_s = time.perf_counter() - t0
    out = {"reports": n_reports, "batch_size": 16, "serial_s": round(serial_s, 2), "serial_ok": s.ok, "ray": []}
    ray.init(num_cpus=max(replicas), include_dashboard=False, logging_level="WARNING")
    try:
        for r in replicas:
            t0 = time.perf_counter()
            sr = api.build_reports(reports, "r", cache_dir=work / f"kc-ray{r}", cancer_type="BLCA", batch_size=16,
                                   executor="ray", replicas=r)
            run_s = time.perf_counter() - t0
            same = _records(work / "kc-serial") == _records(work / f"kc-ray{r}")
            out["ray"].append({"replicas": r, "build_s": round(run_s, 2), "over_serial": round(run_s / serial_s, 3),
                               "ok": sr.ok, "same_records": same})
    finally:
        ray.shutdown()
    return out


def _records(cache: Path) -> list[dict]:
    lines = (cache / "r" / "records.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in ("created", "latency_s")} for x in lines]


def _stats(xs: list[int]) -> dict:
    xs = sorted(xs)
    return {"mean": round(statistics.fmean(xs), 1), "median": xs[len(xs) // 2], "p90": xs[int(0.9 * (len(xs) - 1))],
            "total": sum(xs)}


def report_tokens(report_dir: Path) -> dict:
    from transformers import AutoTokenizer

    from kemm.knowledge.embed.catalog import _minilm_prepare

    csv.field_size_limit(1 << 30)
    texts = []
    for p in sorted(report_dir.glob("*.csv")):
        with open(p, newline="", encoding="utf-8", errors="replace") as f:
            texts += [r.get("ocr_text") or "" for r in csv.DictReader(f)]
    texts = [t for t in texts if t.strip()]
    tok = AutoTokenizer.from_pretrained(str(_minilm_prepare()))
    wordpiece = [len(ids) for ids in tok(texts, add_special_tokens=False, verbose=False)["input_ids"]]
    return {"files": len(list(report_dir.glob("*.csv"))), "reports": len(texts),
            "chars_over_4": _stats([len(t) // 4 for t in texts]), "minilm_wordpiece": _stats(wordpiece)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpus", default="1,2", help="local cluster sizes for the training figure")
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--reports", type=int, default=2000)
    shared = Path(os.environ.get("KEMM_SHARED_DATA", ROOT.parent / "shared" / "data"))
    ap.add_argument("--report-dir", type=Path, default=shared / "raw" / "tcga-path-report" / "Reports")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("ray_overhead.json"))
    ap.add_argument("--only", default="training,knowledge,tokens")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # the workers' kemm
    import ray

    res = json.loads(args.out.read_text()) if args.out.is_file() else {}
    res["environment"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                          "ray": ray.__version__, "loadavg_start": os.getloadavg()}
    work = Path(tempfile.mkdtemp(prefix="kemm-ray-overhead-"))
    try:
        only = set(args.only.split(","))
        if "training" in only:
            res[f"training_epochs{args.epochs}"] = training(work / "train", [int(c) for c in args.cpus.split(",")], args.patients, args.epochs)
            _save(res, args.out)  # after every figure: a crash keeps what was measured
        if "knowledge" in only:
            res["knowledge"] = knowledge(work / "know", args.reports, [1, 2])
            _save(res, args.out)
        if "tokens" in only:
            if args.report_dir.is_dir():
                res["report_tokens"] = report_tokens(args.report_dir)
            else:
                print(f"no {args.report_dir}: tokens per report not measured (set --report-dir or KEMM_SHARED_DATA)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _save(res, args.out)
    print(json.dumps(res, indent=2))


def _save(res: dict, out: Path) -> None:
    res["environment"]["loadavg_end"] = os.getloadavg()
    out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
