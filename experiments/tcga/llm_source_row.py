"""A knowledge source a user built, as rows of one cohort's benchmark (e.g. SmolLM2 on BLCA).

    python experiments/tcga/llm_source_row.py --data-root ../shared/data/raw --cohort blca \\
        --source tcga-blca-smollm2 [--cache-dir knowledge_cache] [--out experiments/tcga]

``--source`` is a refine_report source of that cohort's reports, built beforehand
(``kemm-knowledge build refine_report --reports BLADDER.csv --backend vllm --model
smollm2-135m-instruct --source tcga-blca-smollm2``); the benchmark's own sources must exist
too (``kemm benchmark experiments/tcga --cohorts blca --stages sources``).

What it does, with the benchmark's code paths:

1. derives ``<source>-fields`` (one sentence per validated field) and ``<source>-grounded`` (the
   curated PBK matched to each patient's report), as the benchmark does for its rules source,
   and embeds the three with the default encoder;
2. trains the benchmark's design profile (``benchmark.design`` of base.yaml: field tokens +
   statements + grounded PBK) for the rows ``kemm`` and ``text`` twice, on the cohort's published
   folds with the benchmark's settings: once on the rules source (the committed rows, rerun here:
   the check that this harness reproduces them) and once with every rules role replaced by the
   new source; patients without a record of the new source have no report tokens (masked);
3. audits the three refine_report sources (rules, the imported LLM outputs, the new source).

Writes ``<out>/LLM_SOURCE_<COHORT>.md`` (aggregates only: no report text, no patient id).
Runs under ``<out>/runs/llm_source/`` (git-ignored).
"""
from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from kemm.benchmark.specs import PBK_SOURCE, experiment_configs, load_cohort_specs, source_name
from kemm.knowledge import derive_fields, derive_grounded_pbk, embed_source, load_encoder
from kemm.knowledge.review.audit import audit_source
from kemm.model.run.config import parse_config
from kemm.model.run.evaluate import collect_metrics
from kemm.model.run.train import run_experiment

ROWS = ("kemm", "text")


def swapped_knowledge(knowledge: dict, rules: str, new: str) -> dict:
    """The design profile's knowledge with every source derived from ``rules`` taken from ``new``."""
    k = copy.deepcopy(knowledge)
    for key in ("report", "pbk"):
        names = k.get(key) or []
        names = [names] if isinstance(names, str) else names
        k[key] = [s.replace(rules, new, 1) if s.startswith(rules) else s for s in names]
    return k


def prepare_source(cache_dir: Path, source: str, cancer_type: str) -> None:
    enc = load_encoder()
    fields, grounded = f"{source}-fields", f"{source}-grounded"
    print(derive_fields(cache_dir, source, fields).line(), flush=True)
    print(derive_grounded_pbk(cache_dir, source, PBK_SOURCE, grounded, cancer_type).line(), flush=True)
    for s in (source, fields, grounded):
        embed_source(cache_dir, s, encoder=enc, progress=False)


def run_rows(spec, bench, data_root: Path, cache_dir: Path, out: Path, source: str) -> dict[str, dict]:
    """Train ``ROWS`` of the design profile on the rules source and on ``source``; per-fold metrics per label."""
    design = bench["design"]
    (profile, cfg), = [(p, c) for p, c in experiment_configs(spec, bench, data_root, cache_dir, out / "runs" / "llm_source",
                                                            [], only=set(ROWS)) if p == design]
    rules = source_name(spec.cohort, "rules")
    results: dict[str, dict] = {}
    for tag, knowledge in (("rules", None), (source, swapped_knowledge(cfg.knowledge.model_dump(mode="json"), rules, source))):
        raw = cfg.model_dump(mode="json")
        raw["output_dir"] = str(out / "runs" / "llm_source" / spec.cohort / tag)
        if knowledge is not None:
            raw["knowledge"] = knowledge
        c = parse_config(raw, f"{spec.path} ({tag})")
        t0 = time.perf_counter()
        run_dir = run_experiment(c)
        print(f"{tag}: {time.perf_counter() - t0:.0f} s -> {run_dir}", flush=True)
        for m, d in collect_metrics(run_dir, [m.key for m in c.models]).items():
            results[f"{m}@{tag}"] = d
    return results


def audit_rows(cache_dir: Path, report_files: list[Path], sources: list[str]) -> list[dict]:
    rows = []
    for s in sources:
        rep = audit_source(cache_dir, s, reports=report_files)
        v, f = rep.validity, rep.faithfulness
        cp = f.copied_from_prompt if f is not None else None
        rows.append({
            "source": s,
            "backend": rep.manifest.get("identity", {}).get("backend"),
            "model": rep.manifest.get("identity", {}).get("model_id"),
            "records": v.records, "ok": v.ok, "failed": v.failed, "skipped": v.skipped,
            "faithful records": None if f is None or f.faithfulness is None else f.faithfulness,
            "claims supported": None if f is None else f.claim_support,
            "copied from prompt": None if cp is None else cp.rate,
            "pT not reported": rep.coverage.get("pT"), "grade not reported": rep.coverage.get("grade"),
        })
    return rows


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def render(cohort: str, source: str, results: dict[str, dict], audits: list[dict], committed: pd.DataFrame,
           command: str) -> str:
    n_folds = max(len(d["folds"]) for d in results.values())
    lines = [f"# {cohort.upper()}: the benchmark's design rows on another knowledge source ({source})", "",
             f"Generated by `{command}`; do not edit by hand.", "",
             "## Protocol", "",
             "- Folds, endpoint, settings: the cohort's benchmark config (experiments/tcga), profile `benchmark.design` "
             "(field tokens + the report's statements + PBK grounded in the patient), rows `kemm` and `text`, one seed, "
             "last epoch; nothing was tuned on these folds.",
             f"- `@rules`: the benchmark's rules source (the committed rows, rerun in this harness); `@{source}`: every "
             "rules-derived source replaced by the same derivation of the new source. Patients without an ok record "
             "of a source have no report tokens (masked).",
             f"- Paired over the {n_folds} folds: mean difference, folds better, paired t-test (few folds: a weak test).", "",
             "## C-index per fold", "",
             "| row | " + " | ".join(f"fold {k}" for k in range(n_folds)) + " | mean ± std |",
             "|---|" + "---|" * (n_folds + 1)]
    for label, d in results.items():
        cs = [r.get("c_index") for r in sorted(d["folds"], key=lambda r: r["fold"])]
        lines.append(f"| {label} | " + " | ".join(f"{c:.3f}" for c in cs)
                     + f" | {np.mean(cs):.3f} ± {np.std(cs, ddof=1):.3f} |")
    lines += ["", "Committed rows (experiments/tcga/folds.csv) for the check: "
              + "; ".join(f"{m} {' '.join(f'{c:.3f}' for c in g.sort_values('fold')['c_index'])}"
                          for m, g in committed.groupby("model")), ""]
    lines += ["## Paired differences (new source − rules)", "", "| row | mean ΔC | folds better | paired t p |",
              "|---|---|---|---|"]
    for m in ROWS:
        a, b = results.get(f"{m}@{source}"), results.get(f"{m}@rules")
        if a and b:
            ca = np.array([r["c_index"] for r in sorted(a["folds"], key=lambda r: r["fold"])])
            cb = np.array([r["c_index"] for r in sorted(b["folds"], key=lambda r: r["fold"])])
            p = stats.ttest_rel(ca, cb).pvalue
            lines.append(f"| {m} | {np.mean(ca - cb):+.3f} | {int((ca > cb).sum())}/{len(ca)} | {p:.3f} |")
    lines += ["", "## Audit of the refine_report sources (`kemm-knowledge audit`)", "",
              "| source | backend | model | records | ok | failed | skipped | faithful records | claims supported "
              "| copied from prompt | pT not reported | grade not reported |", "|---" * 12 + "|"]
    for a in audits:
        lines.append(f"| {a['source']} | {a['backend']} | {a['model']} | {a['records']} | {a['ok']} | {a['failed']} | "
                     f"{a['skipped']} | {_pct(a['faithful records'])} | {_pct(a['claims supported'])} | "
                     f"{_pct(a['copied from prompt'])} | {_pct(a['pT not reported'])} | {_pct(a['grade not reported'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--cohort", default="blca")
    ap.add_argument("--source", required=True)
    ap.add_argument("--cache-dir", type=Path, default=Path("knowledge_cache"))
    ap.add_argument("--exp-dir", type=Path, default=Path(__file__).parent)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = ap.parse_args()
    bench, (spec,) = load_cohort_specs(args.exp_dir, [args.cohort])
    files = [args.data_root / f for f in spec.bench.get("reports", [])]
    # the audits first: a missing source stops the script before any training
    audits = audit_rows(args.cache_dir, files, [source_name(spec.cohort, "rules"), source_name(spec.cohort, "llm"),
                                                args.source])
    prepare_source(args.cache_dir, args.source, spec.bench["cancer_type"])
    results = run_rows(spec, bench, args.data_root, args.cache_dir, args.out, args.source)
    folds = pd.read_csv(args.exp_dir / "folds.csv")
    committed = folds[(folds.cohort == args.cohort) & folds.model.isin([*ROWS, "kemm_noknow"])]
    cmd = (f"python experiments/tcga/llm_source_row.py --data-root DATA --cohort {args.cohort} --source {args.source}")
    out = args.out / f"LLM_SOURCE_{args.cohort.upper()}.md"
    out.write_text(render(args.cohort, args.source, results, audits, committed, cmd), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
