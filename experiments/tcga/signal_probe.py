"""Where is the survival signal of pathology reports lost? Linear probes on the benchmark folds.

    python experiments/tcga/signal_probe.py --data-root ../shared/data/raw --cache-dir /work/kcache

Per cohort of experiments/tcga and per report knowledge source (``rules``, imported ``llm``),
on the same PORPOISE/MCAT 5 folds as ``kemm benchmark``, a penalised CoxPH (scikit-survival
elastic-net Cox, scikit-learn Pipeline; every transform fitted on the training fold only,
the penalty chosen by inner 3-fold CV on the training fold only) on: age+sex; TF-IDF->SVD of
the raw report text; the source's validated fields; its mean statement embedding (PCA);
genomics PCA; combinations; and one MiniLM-encoded sentence per case built from the fields.
Writes SIGNAL.md and SIGNAL_folds.csv (aggregated C-indices only: no per-patient output).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.exceptions import NoComparablePairException
from sksurv.linear_model import CoxnetSurvivalAnalysis
from sksurv.metrics import concordance_index_censored

from kemm._io import atomic_write_text
from kemm.benchmark import build_knowledge, load_cohort_specs
from kemm.knowledge import load_encoder, read_embeddings, read_outputs, report_covariates, report_inputs
from kemm.model.linear.text_genomics import CoxPHTextGenomics

log = logging.getLogger("signal_probe")
HERE = Path(__file__).resolve().parent
OMIC = ("_rnaseq", "_cnv", "_mut")
# Fixed a priori, not tuned on any reported fold; only the penalty is chosen (inner CV).
K_TEXT, K_EMB, K_GEN, L1_RATIO, N_ALPHAS, INNER = 50, 20, 20, 0.5, 20, 3
SHARED_SETS = ["age", "text", "genomics", "age+text", "age+text+genomics", "age+text+genomics (CoxPHTextGenomics)"]
SOURCE_SETS = ["fields", "embedding", "field_sentence", "age+fields", "age+embedding", "age+fields+genomics",
               "age+embedding+genomics"]
SENTENCE_FIELDS = [("stage_group", "pathologic stage {}"), ("grade", "grade {}"), ("pT", "p{}"), ("pN", "p{}"),
                   ("pM", "p{}"), ("nodes_positive", "{} positive lymph nodes"), ("nodes_examined", "{} lymph nodes examined"),
                   ("tumor_size", "tumor size {}"), ("margin_status", "margins {}"),
                   ("lymphovascular_invasion", "lymphovascular invasion {}"), ("perineural_invasion", "perineural invasion {}")]


# -- data --------------------------------------------------------------------------------
def read_cohort(path: Path) -> pd.DataFrame:
    """One row per case: time, event, age, sex and every genomic column (as kemm's MCAT loader reads it)."""
    with zipfile.ZipFile(path) as z:
        (member,) = [n for n in z.namelist() if not n.endswith("/")]
        df = pd.read_csv(io.BytesIO(z.read(member)), low_memory=False)  # in memory: member names may hold '../'
    g = df.groupby("case_id", sort=False).first()
    omics = [c for c in g.columns if c.endswith(OMIC)]
    out = pd.DataFrame({"time": g["survival_months"].astype(float), "event": (1 - g["censorship"]).astype(int),
                        "age": pd.to_numeric(g["age"], errors="coerce"), "sex": pd.to_numeric(g["is_female"], errors="coerce")})
    return out.join(g[omics].apply(pd.to_numeric, errors="coerce"))


def read_folds(splits_dir: Path) -> list[tuple[list[str], list[str]]]:
    folds = []
    for k in range(5):
        d = pd.read_csv(splits_dir / f"splits_{k}.csv", index_col=0, dtype=str)
        folds.append(([s for s in d["train"].dropna() if s.strip()], [s for s in d["val"].dropna() if s.strip()]))
    return folds


def signature_columns(table: pd.DataFrame, signatures: Path) -> list[str]:
    """The cohort's genomic columns whose gene is in MCAT's six signatures (the benchmark's genomics)."""
    genes = set(pd.read_csv(signatures).stack().astype(str))
    return [c for c in table.columns if c.endswith(OMIC) and c.rsplit("_", 1)[0] in genes]


def field_sentence(out: dict) -> str:
    parts = [fmt.format(out[k]) for k, fmt in SENTENCE_FIELDS if str(out.get(k, "not reported")) not in ("not reported", "", "None")]
    return "; ".join(parts)


def source_blocks(cache: Path, source: str, cases: pd.Index, encoder) -> tuple[pd.DataFrame, dict]:
    """Per case: fields (f:*), mean statement embedding (e:*), field-sentence embedding (s:*); plus coverage."""
    fields = pd.DataFrame.from_dict(report_covariates(cache, source), orient="index").reindex(cases)
    emb = read_embeddings(cache, source)
    dim = emb.dim
    mean = np.full((len(cases), dim), np.nan)
    for i, c in enumerate(cases):
        v = emb.by_case.get(c)
        if v is not None and len(v):
            mean[i] = np.asarray(v, dtype=float).mean(axis=0)
    outs = read_outputs(cache, source)
    sent = [field_sentence(outs[c]) if c in outs else "" for c in cases]
    uniq = sorted({s for s in sent if s})
    codes = dict(zip(uniq, encoder.encode(uniq))) if uniq else {}
    sem = np.array([codes[s] if s else np.full(dim, np.nan) for s in sent], dtype=float)
    stmts = [s for c in cases for s in emb.statements.get(c, [])]
    n_with = sum(1 for c in cases if emb.statements.get(c))
    counts = pd.Series(stmts).value_counts() if stmts else pd.Series(dtype=int)
    cov = {"source": source, "patients": len(cases), "with_report": n_with,
           **{f"has_{f}": float(fields[f].notna().mean()) for f in ("stage", "grade", "pT")},
           "statements": len(stmts), "distinct_statements": int(len(counts)),
           "statements_in_half_of_reports": int((counts >= 0.5 * max(n_with, 1)).sum()),
           "distinct_field_sentences": len(uniq)}
    D = pd.concat([fields.add_prefix("f:"), pd.DataFrame(mean, index=cases).add_prefix("e:"),
                   pd.DataFrame(sem, index=cases).add_prefix("s:")], axis=1)
    return D, cov


# -- models ------------------------------------------------------------------------------
def _block(kind: str, cols: list[str]) -> tuple:
    """One ColumnTransformer entry; every step is fitted on the rows the pipeline is fitted on."""
    if kind == "text":
        return ("text", make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=3, max_df=0.95, max_features=5000),
                                      TruncatedSVD(K_TEXT, random_state=0), StandardScaler()), "text")
    if kind in ("age", "fields"):  # missing -> training median + indicator
        return (kind, make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), cols)
    k = K_GEN if kind == "genomics" else K_EMB
    return (kind, make_pipeline(SimpleImputer(strategy="median" if kind == "genomics" else "mean"), StandardScaler(),
                                PCA(k, random_state=0), StandardScaler()), cols)


def make_pipeline_for(feature_set: str, columns: list[str]) -> Pipeline:
    prefix = {"fields": "f:", "embedding": "e:", "field_sentence": "s:"}
    blocks = []
    for part in feature_set.split("+"):
        if part == "age":
            blocks.append(_block("age", [c for c in ("age", "sex") if c in columns]))
        elif part == "text":
            blocks.append(_block("text", []))
        elif part == "genomics":
            blocks.append(_block("genomics", [c for c in columns if c.endswith(OMIC)]))
        else:
            blocks.append(_block("fields" if part == "fields" else part, [c for c in columns if c.startswith(prefix[part])]))
    cox = CoxnetSurvivalAnalysis(l1_ratio=L1_RATIO, n_alphas=N_ALPHAS, alpha_min_ratio=0.01, max_iter=20000)
    return Pipeline([("features", ColumnTransformer(blocks)), ("cox", cox)])


def _y(t: np.ndarray, e: np.ndarray) -> np.ndarray:
    return np.array(list(zip(e.astype(bool), t)), dtype=[("event", bool), ("time", float)])


def _c(e: np.ndarray, t: np.ndarray, risk: np.ndarray) -> float:
    try:
        return float(concordance_index_censored(e.astype(bool), t, risk)[0])
    except NoComparablePairException:
        return float("nan")


def _fit(pipe: Pipeline, X: pd.DataFrame, t: np.ndarray, e: np.ndarray, alphas=None) -> Pipeline:
    """Fit; a path that breaks down at its smallest penalties is shortened (near-separable data)."""
    ratio = 0.01
    for _ in range(4):
        p = clone(pipe).set_params(cox__alphas=alphas, cox__alpha_min_ratio=ratio)
        try:
            return p.fit(X, _y(t, e))
        except ArithmeticError:
            ratio, alphas = ratio * 5, None if alphas is None else alphas[: max(2, len(alphas) // 2)]
    raise RuntimeError("elastic-net Cox did not converge at any penalty")


def fit_select_predict(pipe: Pipeline, Xtr, ttr, etr, Xva) -> tuple[np.ndarray, float]:
    """Path on the training fold, penalty by inner CV on it (transforms refitted per inner fold), risk on val."""
    full = _fit(pipe, Xtr, ttr, etr)
    alphas = full.named_steps["cox"].alphas_
    scores = []
    for itr, iva in StratifiedKFold(INNER, shuffle=True, random_state=0).split(Xtr, etr):
        m = _fit(pipe, Xtr.iloc[itr], ttr[itr], etr[itr], alphas)
        Z = m.named_steps["features"].transform(Xtr.iloc[iva])
        coef = m.named_steps["cox"].coef_
        row = [_c(etr[iva], ttr[iva], Z @ coef[:, j]) for j in range(coef.shape[1])]
        scores.append(row + [np.nan] * (len(alphas) - len(row)))
    mean = np.nanmean(np.asarray(scores, dtype=float), axis=0)
    best = int(np.nanargmax(mean))
    Zva = full.named_steps["features"].transform(Xva)
    return Zva @ full.named_steps["cox"].coef_[:, best], float(alphas[best])


def run_set(feature_set: str, D: pd.DataFrame, folds) -> list[dict]:
    rows, t0 = [], time.perf_counter()
    for k, (tr, va) in enumerate(folds):
        Xtr, Xva = D.loc[tr], D.loc[va]
        ttr, etr = Xtr["time"].to_numpy(), Xtr["event"].to_numpy()
        if feature_set.endswith("(CoxPHTextGenomics)"):
            cols = ["age", "sex"] + [c for c in D.columns if c.endswith(OMIC)]
            m = CoxPHTextGenomics().fit(Xtr[cols], Xtr["text"], ttr, etr)
            risk, alpha = m.predict_risk(Xva[cols], Xva["text"]), m.state_["alpha"]
        else:
            present = list(Xtr.columns[Xtr.notna().any().to_numpy()])  # a field never reported in training is no column
            risk, alpha = fit_select_predict(make_pipeline_for(feature_set, present), Xtr, ttr, etr, Xva)
        rows.append({"feature_set": feature_set, "fold": k, "alpha": alpha,
                     "c_index": _c(Xva["event"].to_numpy(), Xva["time"].to_numpy(), risk)})
    log.info("  %-40s C %.3f (%.0f s)", feature_set, np.nanmean([r["c_index"] for r in rows]), time.perf_counter() - t0)
    return rows


# -- per cohort --------------------------------------------------------------------------
def probe_cohort(spec: dict, names: dict, data_root: Path, cache: Path, encoder) -> tuple[list[dict], list[dict]]:
    b, cfg = spec["bench"], spec["config"]["data"]
    sub = lambda s: Path(s.format(data_root=str(data_root)))  # noqa: E731 - the configs' one placeholder
    table = read_cohort(sub(cfg["cohort"]))
    folds = read_folds(sub(cfg["splits_dir"]))
    cases = pd.Index(sorted({c for tr, va in folds for c in tr + va}))
    gen = signature_columns(table, sub(cfg["genomics"]["signatures"]))
    base = table.loc[cases, ["time", "event", "age", "sex"] + gen]
    files = [data_root / f for f in b.get("reports", [])]
    texts = {i.case_id: i.key_text for i in report_inputs(files, cancer_type=b["cancer_type"])}
    base["text"] = [texts.get(c, "") for c in cases]
    rows, covs = [], []
    t0 = time.perf_counter()
    for fs in SHARED_SETS:
        rows += [{**r, "source": "-"} for r in run_set(fs, base, folds)]
    for kind in ("rules", "llm"):
        D, cov = source_blocks(cache, names[kind], cases, encoder)
        covs.append({"cohort": b["cohort"], "kind": kind, "with_text": int((base["text"] != "").sum()), **cov})
        D = base.join(D)
        log.info(" %s source %s", b["cohort"], names[kind])
        for fs in SOURCE_SETS:
            rows += [{**r, "source": kind} for r in run_set(fs, D, folds)]
    log.info("%s: %d fits in %.0f s", b["cohort"], len(rows), time.perf_counter() - t0)
    return [{"cohort": b["cohort"], **r} for r in rows], covs


# -- report ------------------------------------------------------------------------------
def _ms(x: pd.Series) -> str:
    x = x.dropna()
    return f"{x.mean():.3f} ± {x.std(ddof=1):.3f}" if len(x) > 1 else "—"


def verdict(m: dict[str, float], nn: dict[str, float]) -> str:
    """Plain answer from the mean C-indices (llm source, the one KEMM and `text` use); 0.03 = a clear gap."""
    text, fields, emb, sent = m["age+text"], m["age+fields:llm"], m["age+embedding:llm"], m["field_sentence:llm"]
    bare_f, bare_e = m["fields:llm"], m["embedding:llm"]
    out = []
    if max(fields, emb) < text - 0.03:
        out.append(f"signal missing from the knowledge content (age+text {text:.3f} vs age+fields {fields:.3f}, "
                   f"age+embedding {emb:.3f})")
    else:
        out.append(f"the content keeps the text's signal (age+text {text:.3f}; age+fields {fields:.3f}; age+embedding {emb:.3f})")
    if bare_f > max(sent, bare_e) + 0.03:
        out.append(f"lost by the encoder (fields {bare_f:.3f} > field sentence {sent:.3f} / mean embedding {bare_e:.3f})")
    elif bare_f > 0.53:
        out.append(f"the encoder keeps the fields' signal (fields {bare_f:.3f}, field sentence {sent:.3f}, mean embedding {bare_e:.3f})")
    else:
        out.append(f"the fields carry little alone (fields {bare_f:.3f}, field sentence {sent:.3f}, mean embedding {bare_e:.3f})")
    rf, lf = m.get("fields:rules", np.nan), bare_f
    if rf > lf + 0.03:
        out.append(f"the imported LLM source lost field content the rules source keeps (fields: rules {rf:.3f}, llm {lf:.3f})")
    neural = nn.get("text")
    if neural is not None and bare_e > neural + 0.03:
        out.append(f"lost by the model (linear on the mean embedding {bare_e:.3f} vs neural text-only {neural:.3f})")
    elif neural is not None:
        out.append(f"not lost by the model beyond the linear probe (mean embedding {bare_e:.3f} vs neural text-only {neural:.3f})")
    return "; ".join(out) + "."


def write_md(out: Path, folds: pd.DataFrame, cov: pd.DataFrame, neural: pd.DataFrame, seconds: float) -> None:
    folds = folds.assign(key=[f"{f}:{s}" if s != "-" else f for f, s in zip(folds.feature_set, folds.source)])
    cohorts = list(dict.fromkeys(folds.cohort))
    keys = list(dict.fromkeys(folds.key))
    mean = folds.groupby(["key", "cohort"])["c_index"].mean().unstack()[cohorts]
    L = ["# Where the survival signal of pathology reports is lost: linear probes",
         "", f"Generated by `python experiments/tcga/signal_probe.py` ({seconds:.0f} s); do not edit by hand.", "",
         "## Protocol", "",
         "- Cohorts, splits, endpoint: as `kemm benchmark` (experiments/tcga/*.yaml): the PORPOISE/MCAT "
         "`splits_{0..4}.csv` of each cohort, overall survival. Every patient of a fold is kept; a missing report is an "
         "empty text / missing fields / missing embedding.",
         "- Model: elastic-net Cox (scikit-survival `CoxnetSurvivalAnalysis`, l1_ratio 0.5, 20 penalties on its path) "
         "in a scikit-learn Pipeline. Every transform is fitted on the training fold only; the penalty is chosen by "
         "inner 3-fold CV (stratified by event) on the training fold only, every transform refitted per inner fold.",
         f"- Features (sizes fixed a priori): age + sex (median + missing indicator); text = TF-IDF of the raw OCR "
         f"report (sublinear tf, min_df 3, max_df 0.95, 5000 terms) -> TruncatedSVD {K_TEXT}; fields = the source's "
         "validated covariates (`kemm.knowledge.report_covariates`: stage, grade, pT, pN, pM, nodes, size, margin, LVI, "
         f"PNI; median + missing indicator); embedding = mean all-MiniLM-L6-v2 statement embedding -> PCA {K_EMB}; "
         f"field_sentence = MiniLM embedding of one sentence per case written from the same fields "
         f"(\"pathologic stage III; grade G3; pT3; pN1 ...\") -> PCA {K_EMB}; genomics = MCAT signature columns -> PCA {K_GEN}.",
         "- `age+text+genomics (CoxPHTextGenomics)` = `kemm/model/linear/text_genomics.py` (own inner CV, same features).",
         "- C-index = Harrell's (`concordance_index_censored`, higher risk = earlier event); mean ± sample std over the 5 folds. "
         "`:rules` / `:llm` = knowledge source; rows without a suffix do not use one. Per-fold values: SIGNAL_folds.csv.",
         "", "## Mean C-index", "", "| feature set | " + " | ".join(cohorts) + " | mean |", "|---|" + "---|" * (len(cohorts) + 1)]
    for k in keys:
        r = mean.loc[k]
        L.append(f"| {k} | " + " | ".join(f"{v:.3f}" for v in r) + f" | {r.mean():.3f} |")
    L += ["", "Benchmark rows from RESULTS.md (neural, same folds) for comparison:", "",
          "| model | " + " | ".join(cohorts) + " | mean |", "|---|" + "---|" * (len(cohorts) + 1)]
    for mdl, r in neural.iterrows():
        L.append(f"| {mdl} | " + " | ".join(f"{r.get(c, np.nan):.3f}" for c in cohorts) + f" | {r[cohorts].mean():.3f} |")
    L += ["", "## Mean ± std per cohort", ""]
    for c in cohorts:
        g = folds[folds.cohort == c]
        L += [f"### {c.upper()}", "", "| feature set | C-index | folds 0–4 |", "|---|---|---|"]
        for k in keys:
            x = g[g.key == k].sort_values("fold")["c_index"]
            L.append(f"| {k} | {_ms(x)} | " + " ".join(f"{v:.3f}" for v in x) + " |")
        L.append("")
    L += coverage_md(cov)
    L += ["## Answer per cohort", "",
          "Rules (llm source, the one `kemm` and `text` use; a gap counts when it exceeds 0.03 C): content = "
          "max(age+fields, age+embedding) vs age+text; encoder = fields vs field sentence / mean embedding; model = linear "
          "probe on the mean embedding vs the neural `text` model of RESULTS.md.", ""]
    for c in cohorts:
        m = mean[c].to_dict()
        L.append(f"- **{c.upper()}**: " + verdict(m, neural[c].dropna().to_dict() if c in neural else {}))
    atomic_write_text(out, "\n".join(L) + "\n")


def coverage_md(cov: pd.DataFrame) -> list[str]:
    L = ["## Knowledge content per source", "",
         "Share of the fold patients with a non-missing field; statements = embedded statements over those patients; "
         "'in ≥ half' = distinct statements that occur in at least half of the reports (near-constant, e.g. the site).", "",
         "| cohort | source | patients | with text | with report | stage | grade | pT | statements | distinct | in ≥ half | distinct field sentences |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in cov.iterrows():
        L.append(f"| {r.cohort} | {r.kind} | {r.patients} | {r.with_text} | {r.with_report} | {r.has_stage:.2f} | "
                 f"{r.has_grade:.2f} | {r.has_pT:.2f} | {r.statements} | {r.distinct_statements} | "
                 f"{r.statements_in_half_of_reports} | {r.distinct_field_sentences} |")
    return L + [""]


def neural_rows(results_csv: Path) -> pd.DataFrame:
    if not results_csv.is_file():
        return pd.DataFrame()
    r = pd.read_csv(results_csv)
    keep = ["text", "kemm_report", "kemm", "kemm_noknow", "coxph", "coxph_rules", "kemm_rules", "snn"]
    r = r[r.model.isin(keep)]
    return r.pivot(index="model", columns="cohort", values="c_mean").reindex([k for k in keep if k in set(r.model)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, required=True, help="shared/data/raw")
    ap.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("KEMM_CACHE_DIR", "knowledge_cache")))
    ap.add_argument("--cohorts", default=None, help="comma-separated, e.g. blca,luad (default: every config)")
    ap.add_argument("--out", type=Path, default=HERE / "SIGNAL.md", help="SIGNAL.md; SIGNAL_folds.csv goes beside it")
    ap.add_argument("--exp-dir", type=Path, default=HERE)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    _, specs = load_cohort_specs(a.exp_dir, a.cohorts.split(",") if a.cohorts else None)
    names = build_knowledge(specs, a.data_root, a.cache_dir)  # cached sources are reused, not rebuilt
    encoder = load_encoder()
    rows, covs = [], []
    for spec in specs:
        r, c = probe_cohort(spec, names[spec["bench"]["cohort"]], a.data_root, a.cache_dir, encoder)
        rows, covs = rows + r, covs + c
        # written after every cohort, so an interrupted run leaves the cohorts it finished
        folds = pd.DataFrame(rows)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.out.with_name(a.out.stem + "_folds.csv"), folds.to_csv(index=False))
        write_md(a.out, folds, pd.DataFrame(covs), neural_rows(a.exp_dir / "results.csv"), time.perf_counter() - t0)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
