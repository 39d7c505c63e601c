"""Benchmark results: per-fold table, summaries, paired tests, RESULTS.md and figures.

Imports: numpy, pandas, scipy, ``kemm.model.run.rundir``, ``kemm.benchmark`` (figures, selection, specs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from kemm._io import atomic_write_text
from kemm.benchmark.figures import forest_plot, model_chart
from kemm.benchmark.selection import nested_rows
from kemm.benchmark.specs import BenchmarkError, CohortSpec
from kemm.model.run.rundir import RunDir

PUBLISHED = {
    "MCATsm_nll_surv_a0.0_5foldcv_gc32_concat": "MCAT (WSI+genomics)",
    "SNNsm_nll_surv_a0.0_reg1e-04_5foldcv_gc32_sig": "SNN (genomics)",
    "AMILsm_nll_surv_a0.0_5foldcv_gc32_sig": "AMIL (WSI)",
}
METRICS = ("c_index", "c_index_ipcw", "ibs", "td_auc", "seconds")


def collect_folds(run_dirs: dict[str, dict[str, Path]]) -> pd.DataFrame:
    """One row per (cohort, experiment, model, fold) from the runs' fold records."""
    rows = []
    for cohort, kinds in run_dirs.items():
        for kind, rd in kinds.items():
            if not Path(rd).is_dir():
                continue
            for m in RunDir(rd).all_fold_records():
                rows.append({"cohort": cohort, "experiment": kind, "model": m["model"], "fold": m["fold"],
                             **{k: m.get(k) for k in METRICS}})
    return pd.DataFrame(rows, columns=["cohort", "experiment", "model", "fold", *METRICS])


def published_folds(derived: Path, cohorts: list[str]) -> pd.DataFrame:
    f = derived / "MCAT" / "results_ICCV_cindex_per_fold.csv"
    if not f.is_file():
        return pd.DataFrame(columns=["cohort", "model", "fold", "c_index"])
    d = pd.read_csv(f)
    d = d[d["method"].isin(PUBLISHED) & d["cohort"].isin(cohorts)]
    rows = [{"cohort": r["cohort"], "model": f"published: {PUBLISHED[r['method']]}", "fold": k,
             "c_index": float(r[f"fold{k}"])} for _, r in d.iterrows() for k in range(5)]
    return pd.DataFrame(rows)


def _ms(x: pd.Series) -> str:
    x = pd.to_numeric(x, errors="coerce").dropna()
    if x.empty:
        return "—"
    return f"{x.mean():.3f} ± {x.std(ddof=1):.3f}" if len(x) > 1 else f"{x.mean():.3f}"


def paired_tests(folds: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Fold-wise paired differences a − b per cohort (t-test over its folds) and pooled (Wilcoxon)."""
    rows, pooled = [], []
    for cohort, g in folds.groupby("cohort"):
        pa = g[g.model == a].set_index("fold")["c_index"]
        pb = g[g.model == b].set_index("fold")["c_index"]
        common = pa.index.intersection(pb.index)
        # A fold whose C-index is undefined (NaN/None) for either model is no pair.
        d = (pd.to_numeric(pa[common], errors="coerce") - pd.to_numeric(pb[common], errors="coerce")).dropna()
        if len(d) < 2:
            continue
        pooled += list(d)
        p = float(stats.ttest_1samp(d, 0.0).pvalue) if d.std() > 0 else float("nan")  # = paired t on a, b
        rows.append({"cohort": cohort, "mean_diff": d.mean(), "sd_diff": d.std(ddof=1), "n_folds": len(d),
                     "wins": int((d > 0).sum()), "p_paired_t": p})
    if len(pooled) >= 5 and np.any(np.asarray(pooled) != 0):
        w = stats.wilcoxon(pooled)
        t = stats.ttest_1samp(pooled, 0.0)
        rows.append({"cohort": "ALL (pooled folds)", "mean_diff": float(np.mean(pooled)),
                     "sd_diff": float(np.std(pooled, ddof=1)), "n_folds": len(pooled),
                     "wins": int(np.sum(np.array(pooled) > 0)), "p_paired_t": float(t.pvalue),
                     "p_wilcoxon": float(w.pvalue)})
    return pd.DataFrame(rows)


def summarize(allf: pd.DataFrame) -> pd.DataFrame:
    summ = []
    for (cohort, model), g in allf.groupby(["cohort", "model"], sort=False):
        per = g.sort_values("fold")["c_index"].tolist()
        summ.append({"cohort": cohort, "model": model, "c_index": _ms(g["c_index"]),
                     "c_index_ipcw": _ms(g.get("c_index_ipcw", pd.Series(dtype=float))),
                     "ibs": _ms(g.get("ibs", pd.Series(dtype=float))),
                     "per_fold": " ".join(f"{v:.3f}" for v in per), "c_mean": float(np.nanmean(per))})
    return pd.DataFrame(summ)


def carry_folds(folds: pd.DataFrame, prior: Path, cohorts: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """``folds`` plus the rows of an earlier ``folds.csv`` (``prior``) for every (cohort, model) that
    has no run here: a row added to base.yaml is trained alone and reported beside the rows that
    ran before, without re-training them. Published and nested rows are not carried (they are
    rebuilt). Returns the merged folds and the carried model names."""
    if not prior.is_file():
        raise BenchmarkError(f"--carry {prior}: no such file (expected an earlier run's folds.csv)")
    old = pd.read_csv(prior)
    need = {"cohort", "experiment", "model", "fold", "c_index"}
    if not need <= set(old.columns):
        raise BenchmarkError(f"--carry {prior}: not a folds.csv (needs columns {', '.join(sorted(need))})")
    old = old[old.cohort.isin(cohorts) & (old.experiment != "published")
              & ~old.experiment.astype(str).str.startswith("nested choice:")]
    have = set(zip(folds.cohort, folds.model))
    old = old[[(c, m) not in have for c, m in zip(old.cohort, old.model)]]
    carried = sorted(set(old.model))
    return pd.concat([folds, old.reindex(columns=folds.columns)], ignore_index=True), carried


def write_results(out_dir: Path, specs: list[CohortSpec], run_dirs: dict[str, dict[str, Path]], derived: Path,
                  timings: dict[str, float], bench_base: dict, settings: dict | None = None,
                  carry: Path | None = None) -> None:
    """folds.csv, results.csv, RESULTS.md and the two figures in ``out_dir`` (``carry``: an earlier
    folds.csv whose rows without a run here are reported too, ``carry_folds``)."""
    folds = collect_folds(run_dirs)
    if carry is not None:
        folds, carried = carry_folds(folds, Path(carry), [s.cohort for s in specs])
        settings = {**(settings or {}), "carried": carried, "carried_from": str(carry)}
    sel = out_dir / "selection.csv"
    if sel.is_file() and not folds.empty:
        folds = pd.concat([folds, nested_rows(folds, pd.read_csv(sel))], ignore_index=True)
    cohorts = [s.cohort for s in specs]
    allf = pd.concat([folds, published_folds(derived, cohorts).assign(experiment="published")], ignore_index=True)
    allf.to_csv(out_dir / "folds.csv", index=False)
    summary = summarize(allf)
    summary.to_csv(out_dir / "results.csv", index=False)
    pairs = [tuple(p) for p in bench_base.get("pairs", [])]
    tests = {p: paired_tests(folds, *p) for p in pairs} if not folds.empty else {}
    figs = []
    if pairs and not folds.empty and not tests[pairs[0]].empty:
        forest_plot(tests[pairs[0]], pairs[0], out_dir / "forest.png")
        figs.append(("forest.png", f"{pairs[0][0]} − {pairs[0][1]}: mean paired ΔC per cohort with 95% CI"))
    if not folds.empty:
        model_chart(allf, cohorts, out_dir / "models.png", tuple(pairs[0]) if pairs else ())
        figs.append(("models.png", "mean C-index of every model per cohort"))
    coverage = {}
    for c, kinds in run_dirs.items():
        for rd in kinds.values():
            if (Path(rd) / "run.json").is_file():
                coverage[c] = RunDir(rd).read_run_json().get("coverage", {})
    atomic_write_text(out_dir / "RESULTS.md", render_md(summary, coverage, tests, timings, bench_base, cohorts, folds, figs,
                                                              settings))


def _pair_table(name: tuple[str, str], t: pd.DataFrame) -> list[str]:
    lines = [f"### {name[0]} − {name[1]}", "",
             "| cohort | mean ΔC | sd | folds | wins | p (paired t) | p (Wilcoxon, pooled) |", "|---|---|---|---|---|---|---|"]
    for _, r in t.iterrows():
        pw = r.get("p_wilcoxon", float("nan"))
        lines.append(f"| {r.cohort} | {r.mean_diff:+.3f} | {r.sd_diff:.3f} | {r.n_folds} | {r.wins} | "
                     f"{'' if pd.isna(r.p_paired_t) else f'{r.p_paired_t:.3g}'} | {'' if pd.isna(pw) else f'{pw:.3g}'} |")
    return lines + [""]


def _profiles_table(bench_base: dict) -> list[str]:
    lines = ["| profile | report tokens | PBK tokens | encoder | field-token kinds |", "|---|---|---|---|---|"]
    for name, p in (bench_base.get("profiles") or {}).items():
        p = p or {}
        has = bool(p.get("report") or p.get("pbk"))
        kinds = ("per field (pT)" if p.get("kind_values") is False else "per value (pT:3)") if has else "—"
        lines.append(f"| {name} | {', '.join(p.get('report') or []) or '—'} | {', '.join(p.get('pbk') or []) or '—'} | "
                     f"{p.get('encoder') or 'all-MiniLM-L6-v2' if has else '—'} | {kinds} |")
    return lines + [""]


def _settings_lines(settings: dict | None) -> list[str]:
    """The exact command, cohorts, overrides and effective training settings of the run that wrote the file."""
    if not settings:
        return []
    ov = settings.get("overrides") or []
    tr = settings.get("train") or {}
    lines = ["## Settings of this run", "",
             f"- Command: `{settings.get('command') or 'kemm.benchmark.run_benchmark(...)'}`",
             f"- Cohorts: {', '.join(settings.get('cohorts') or [])}",
             "- Overrides (`--set`, over base.yaml and the protocol above): "
             + (", ".join(f"`{o}`" for o in ov) if ov else "none")]
    if tr:
        lines.append("- Effective training settings: " + ", ".join(f"{k} {v}" for k, v in tr.items()
                                                                    if not isinstance(v, dict)))
    if ov:
        lines.append("- **Where the protocol text and these settings differ, these settings are what ran.**")
    if settings.get("carried"):
        lines.append(f"- Rows carried unchanged from `{settings.get('carried_from')}` (trained by an earlier run "
                     "of this benchmark, not re-run by this command): " + ", ".join(settings["carried"]))
    return lines + [""]


def render_md(summary, coverage, tests, timings, bench_base, cohorts, folds, figs, settings=None) -> str:
    lines = ["# kemm on TCGA: KEMM, ablations and baselines on the published 5-fold splits", "",
             "Generated by `kemm benchmark` (`kemm/benchmark/`); do not edit by hand.", "", "## Protocol", "",
             bench_base.get("protocol", "").strip(), "",
             "- Splits: the PORPOISE/MCAT `splits/5foldcv/tcga_<cohort>/splits_{0..4}.csv`; endpoint overall "
             "survival; metrics on each validation fold at the last epoch. C-index = Harrell's; IPCW C = Uno's; "
             "IBS inside each validation fold's follow-up. Mean ± sample std over the 5 folds.",
             "- No WSI features exist here: every model runs without the WSI modality (KEMM's knowledge tokens "
             "query genomic-group tokens only). `published:` rows are MCAT's released results (WSI+genomics), "
             "copied, not re-run.",
             "- Rows are `<model>@<profile>`; a profile fixes the knowledge sources (table below). Neural rows "
             "receive age and sex unless labelled `-noclin`; `text@*` rows receive no covariates. `coxph` / "
             "`coxph_rules`: age, sex, stage, grade from the LLM / rules source; `coxph_text_genomics`: "
             "penalised CoxPH on age, sex, TF-IDF/SVD of the raw report text and genomics PCA, every transform "
             "and the penalty fitted on the training fold. `kemm_nested`: per fold, the candidate chosen on "
             "inner splits of that fold's training patients (SELECTION.md).", "", "### Knowledge profiles", ""]
    lines += _settings_lines(settings)
    lines += _profiles_table(bench_base)
    for f, cap in figs:
        lines += [f"![{cap}]({f})", "", f"*{cap}*", ""]
    if not folds.empty:
        piv = folds.groupby(["model", "cohort"])["c_index"].mean().unstack()
        lines += ["## Overview: mean C-index", "", "| model | " + " | ".join(piv.columns) + " | mean |",
                  "|---|" + "---|" * (len(piv.columns) + 1)]
        for m, r in piv.sort_values(by=list(piv.columns), ascending=False).iterrows():
            lines.append(f"| {m} | " + " | ".join(f"{v:.3f}" for v in r) + f" | {r.mean():.3f} |")
        lines.append("")
    if tests:
        lines += ["## Paired fold-wise comparisons", ""]
        for p, t in tests.items():
            if not t.empty:
                lines += _pair_table(p, t)
    lines += ["## C-index per cohort (mean ± std over folds; per-fold values)", ""]
    for c in cohorts:
        s = summary[summary.cohort == c]
        if s.empty:
            continue
        lines += [f"### {c.upper()}", ""]
        cov = coverage.get(c, {})
        if cov:
            lines += ["Patients: " + ", ".join(f"{v} {'in total' if k == 'patients' else 'with ' + k}"
                                               for k, v in cov.items()) + ".", ""]
        lines += ["| model | C-index | IPCW C | IBS | folds 0–4 |", "|---|---|---|---|---|"]
        lines += [f"| {r.model} | {r.c_index} | {r.c_index_ipcw} | {r.ibs} | {r.per_fold} |" for _, r in s.iterrows()]
        lines.append("")
    secs = folds.groupby("cohort")["seconds"].sum() if not folds.empty else pd.Series(dtype=float)
    lines += ["## Runtime", "", "Training + evaluation seconds summed over (model, fold) runs, 1 torch thread: "
              + ", ".join(f"{c} {v:.0f} s" for c, v in secs.items()) + ".", ""]
    return "\n".join(lines) + "\n"
