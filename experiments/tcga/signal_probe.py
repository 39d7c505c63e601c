"""Where is the survival signal of pathology reports lost? Linear probes on the benchmark folds.

    python experiments/tcga/signal_probe.py --data-root ../shared/data/raw --cache-dir /work/kcache2

Per cohort of experiments/tcga and per report knowledge source (``rules``, imported ``llm``),
on the same PORPOISE/MCAT 5 folds as ``kemm benchmark``, a penalised CoxPH (scikit-survival
elastic-net Cox, scikit-learn Pipeline; every transform fitted on the training fold only,
the penalty chosen by inner CV on the training fold only) on: age+sex; TF-IDF->SVD of the raw
report text; the source's validated fields; its mean statement embedding (PCA); the mean
embedding of its derived ``-fields`` source (the field sentences the model reads, PCA); the
mean embedding of the cohort's ``report-sentences`` source (PCA); genomics PCA; and the
combinations that answer the question.  Reads the sources that ``kemm benchmark --stages
sources`` built (it never builds or embeds one).
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
from kemm.benchmark import load_cohort_specs
from kemm.benchmark.specs import CohortSpec, format_paths, source_name
from kemm.knowledge import KnowledgeError, read_embeddings, report_covariates, report_inputs

log = logging.getLogger("signal_probe")
HERE = Path(__file__).resolve().parent
OMIC = ("_rnaseq", "_cnv", "_mut")
ENCODER = "all-MiniLM-L6-v2"  # the benchmark's default encoder (the one `text` and `kemm@fields` read)
# Fixed a priori, not tuned on any reported fold; only the penalty is chosen (inner CV).
K_TEXT, K_EMB, K_GEN, L1_RATIO, N_ALPHAS, INNER = 50, 20, 20, 0.5, 10, 2
SHARED_SETS = ["age", "age+text", "age+text+genomics", "sentences", "age+sentences"]
SOURCE_SETS = ["fields", "field_tokens", "embedding", "age+fields", "age+field_tokens", "age+embedding"]
# The benchmark rows compared with the probes (labels of the current base.yaml), when folds.csv has them.
NEURAL = ["kemm_noknow", "kemm_noknow@ens3", "kemm_noknow@lin75", "kemm_noknow@ens3lin", "kemm", "kemm@ens3", "kemm@sent",
          "kemm@lin", "kemm@ens3lin", "kemm@ens3lin_k", "kemm_nested", "kemm@llm", "text", "text@ens3", "text@sent", "text@lin", "text@ens3lin", "text@ens3lin_k",
          "text_nested", "coxph", "coxph_rules", "coxph_text_genomics"]
GAP = 0.03  # a difference of mean C counts as clear above this (5-fold std is ~0.03-0.08)
CHANCE = 0.55  # a bare feature set below this carries little signal


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


def _mean_embedding(cache: Path, source: str, cases: pd.Index) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Mean statement embedding per case ``[n, D]`` (NaN rows where the case has none) and the statements."""
    try:
        emb = read_embeddings(cache, source, ENCODER)
    except KnowledgeError as e:
        raise SystemExit(f"{cache}: source {source!r} not readable ({e}); build it first with "
                         "`kemm benchmark ... --stages sources --cache-dir {cache}`") from None
    mean = np.full((len(cases), emb.dim), np.nan)
    for i, c in enumerate(cases):
        v = emb.by_case.get(c)
        if v is not None and len(v):
            mean[i] = np.asarray(v, dtype=float).mean(axis=0)
    return mean, {c: list(emb.statements.get(c, [])) for c in cases}


def source_blocks(cache: Path, cohort: str, kind: str, cases: pd.Index) -> tuple[pd.DataFrame, dict]:
    """Per case: fields (f:*), mean statement embedding (e:*), mean field-sentence embedding (t:*); plus coverage."""
    source, fsource = source_name(cohort, kind), source_name(cohort, f"{kind}-fields")
    fields = pd.DataFrame.from_dict(report_covariates(cache, source), orient="index").reindex(cases)
    mean, stmts_by = _mean_embedding(cache, source, cases)
    fmean, fstmts = _mean_embedding(cache, fsource, cases)
    stmts = [s for c in cases for s in stmts_by[c]]
    n_with = sum(1 for c in cases if stmts_by[c])
    counts = pd.Series(stmts).value_counts() if stmts else pd.Series(dtype=int)
    n_ft = [len(fstmts[c]) for c in cases if fstmts[c]]
    cov = {"source": source, "patients": len(cases), "with_report": n_with,
           **{f"has_{f}": float(fields[f].notna().mean()) if f in fields else 0.0 for f in ("stage", "grade", "pT")},
           "statements": len(stmts), "distinct_statements": int(len(counts)),
           "statements_in_half_of_reports": int((counts >= 0.5 * max(n_with, 1)).sum()),
           "with_field_tokens": len(n_ft), "field_tokens_per_patient": float(np.mean(n_ft)) if n_ft else 0.0,
           "distinct_field_sentences": len({s for c in cases for s in fstmts[c]})}
    D = pd.concat([fields.add_prefix("f:"), pd.DataFrame(mean, index=cases).add_prefix("e:"),
                   pd.DataFrame(fmean, index=cases).add_prefix("t:")], axis=1)
    return D, cov


# -- models ------------------------------------------------------------------------------
def _block(kind: str, cols: list[str]) -> tuple:
    """One ColumnTransformer entry; every step is fitted on the rows the pipeline is fitted on."""
    if kind == "text":
        # the column holds token lists (tokenised once, a per-document step); vocabulary and idf are fitted here
        return ("text", make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=3, max_df=0.95, max_features=5000,
                                                      analyzer=_identity),
                                      TruncatedSVD(K_TEXT, random_state=0), StandardScaler()), "text")
    if kind in ("age", "fields"):  # missing -> training median + indicator
        return (kind, make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), cols)
    k = K_GEN if kind == "genomics" else K_EMB
    return (kind, make_pipeline(SimpleImputer(strategy="median" if kind == "genomics" else "mean"), StandardScaler(),
                                PCA(k, random_state=0), StandardScaler()), cols)


def _identity(tokens: list[str]) -> list[str]:
    return tokens


def make_pipeline_for(feature_set: str, columns: list[str]) -> Pipeline:
    prefix = {"fields": "f:", "embedding": "e:", "field_tokens": "t:", "sentences": "s:"}
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
        present = list(Xtr.columns[Xtr.notna().any().to_numpy()])  # a field never reported in training is no column
        risk, alpha = fit_select_predict(make_pipeline_for(feature_set, present), Xtr, ttr, etr, Xva)
        rows.append({"feature_set": feature_set, "fold": k, "alpha": alpha,
                     "c_index": _c(Xva["event"].to_numpy(), Xva["time"].to_numpy(), risk)})
    log.info("  %-28s C %.3f (%.0f s)", feature_set, np.nanmean([r["c_index"] for r in rows]), time.perf_counter() - t0)
    return rows


# -- per cohort --------------------------------------------------------------------------
def probe_cohort(spec: CohortSpec, data_root: Path, cache: Path) -> tuple[list[dict], list[dict]]:
    cfg = format_paths(spec.config["data"], data_root=str(data_root))
    table = read_cohort(Path(cfg["cohort"]))
    folds = read_folds(Path(cfg["splits_dir"]))
    cases = pd.Index(sorted({c for tr, va in folds for c in tr + va}))
    gen = signature_columns(table, Path(cfg["genomics"]["signatures"]))
    base = table.loc[cases, ["time", "event", "age", "sex"] + gen]
    files = [data_root / f for f in spec.bench.get("reports", [])]
    texts = {i.case_id: i.key_text for i in report_inputs(files, cancer_type=spec.bench["cancer_type"])}
    tokenize = TfidfVectorizer().build_analyzer()  # scikit-learn's default tokens, no statistics
    base["text"] = [tokenize(texts.get(c, "")) for c in cases]
    sent, _ = _mean_embedding(cache, source_name(spec.cohort, "report-sentences"), cases)  # no LLM, no source kind
    base = base.join(pd.DataFrame(sent, index=cases).add_prefix("s:"))
    rows, covs = [], []
    t0 = time.perf_counter()
    for fs in SHARED_SETS:
        rows += [{**r, "source": "-"} for r in run_set(fs, base, folds)]
    for kind in ("rules", "llm"):
        D, cov = source_blocks(cache, spec.cohort, kind, cases)
        covs.append({"cohort": spec.cohort, "kind": kind, "with_text": int(base["text"].map(len).gt(0).sum()), **cov})
        D = base.join(D)
        log.info(" %s source %s", spec.cohort, cov["source"])
        for fs in SOURCE_SETS:
            rows += [{**r, "source": kind} for r in run_set(fs, D, folds)]
    log.info("%s: %d fold fits in %.0f s", spec.cohort, len(rows), time.perf_counter() - t0)
    return [{"cohort": spec.cohort, **r} for r in rows], covs


# -- report ------------------------------------------------------------------------------
def _ms(x: pd.Series) -> str:
    x = x.dropna()
    return f"{x.mean():.3f} ± {x.std(ddof=1):.3f}" if len(x) > 1 else "—"


# source -> (the neural text-only models reading it, first found, and the linear probe on the same tokens).
# `text` / `text@ens3` read the rules source's field tokens + statements + grounded PBK (profile fields_stmts);
# no benchmark row reads the llm source with the text-only model.
PROBE_OF = {"rules": (("text_nested", "text@ens3", "text"), "field_tokens"), "llm": ((), "embedding")}


def stage_lost(m: dict[str, float], nn: dict[str, float], kind: str) -> tuple[str, str]:
    """(where the signal is lost for source ``kind``, the numbers behind it), from mean C-indices."""
    f, t, e = m[f"fields:{kind}"], m[f"field_tokens:{kind}"], m[f"embedding:{kind}"]
    nums = f"fields {f:.3f}, field tokens {t:.3f}, statements {e:.3f}"
    if max(f, t, e) < CHANCE:
        gain = m["age+text"] - m["age"]
        where = "the raw text adds to age" if gain > GAP else "the raw text adds little to age too"
        return "missing from the knowledge content", f"{nums}; age+text − age {gain:+.3f}: {where}"
    if f >= CHANCE and max(t, e) < f - GAP:
        return "lost by the encoder", nums
    rows, probe = PROBE_OF[kind]
    neural = next((r for r in rows if r in nn), None)
    if neural is None:
        return "not lost up to the encoder (model not compared: no text-only row reads this source)", nums
    lin = m[f"{probe}:{kind}"]
    if nn[neural] < lin - GAP:
        return "lost by the model", f"{nums}; {neural} {nn[neural]:.3f} vs linear {lin:.3f}"
    return "not lost (the neural model reaches the linear probe)", f"{nums}; {neural} {nn[neural]:.3f} vs linear {lin:.3f}"


def verdict(m: dict[str, float], nn: dict[str, float]) -> str:
    parts = []
    for kind in ("rules", "llm"):
        where, nums = stage_lost(m, nn, kind)
        parts.append(f"{kind}: **{where}** ({nums})")
    return "; ".join(parts) + "."


def _mean_table(mean: pd.DataFrame, keys: list[str], cohorts: list[str], head: str) -> list[str]:
    L = [f"| {head} | " + " | ".join(cohorts) + " | mean |", "|---|" + "---|" * (len(cohorts) + 1)]
    for k in keys:
        r = mean.loc[k].reindex(cohorts)
        L.append(f"| {k} | " + " | ".join("—" if pd.isna(v) else f"{v:.3f}" for v in r) + f" | {r.mean():.3f} |")
    return L


PROTOCOL = [
    "- Cohorts, splits, endpoint: as `kemm benchmark` (experiments/tcga/*.yaml): the PORPOISE/MCAT "
    "`splits_{0..4}.csv` of each cohort, overall survival. Every patient of a fold is kept; a missing report is an "
    "empty text / missing fields / missing embedding.",
    f"- Model: elastic-net Cox (scikit-survival `CoxnetSurvivalAnalysis`, l1_ratio {L1_RATIO}, {N_ALPHAS} penalties on "
    "its path) in a scikit-learn Pipeline. Every transform is fitted on the training fold only; the penalty is chosen by "
    f"inner {INNER}-fold CV (stratified by event) on the training fold only, every transform refitted per inner fold.",
    f"- Features (sizes fixed a priori): age + sex (median + missing indicator); text = TF-IDF of the raw OCR "
    f"report (sublinear tf, min_df 3, max_df 0.95, 5000 terms) -> TruncatedSVD {K_TEXT}; fields = the source's "
    "validated covariates (`kemm.knowledge.report_covariates`: stage, grade, pT, pN, pM, nodes, size, margin, LVI, "
    f"PNI; median + missing indicator); embedding = the source's mean {ENCODER} statement embedding -> PCA {K_EMB}; "
    f"field_tokens = mean embedding of the derived `<source>-fields` source (fields-v2: one sentence per validated "
    f"field, the tokens `kemm` and `text` read beside the statements) -> PCA {K_EMB}; sentences = mean embedding of the "
    f"cohort's `report-sentences` source (report-sentences-v1: the report's own diagnostic sentences, no LLM; the "
    f"tokens `kemm@sent` and `text@sent` read besides) -> PCA {K_EMB}; genomics = MCAT signature columns -> "
    f"PCA {K_GEN}. `age+text+genomics` is the probe's version of the benchmark's `coxph_text_genomics`.",
    "- C-index = Harrell's (`concordance_index_censored`, higher risk = earlier event); mean ± sample std over the 5 "
    "folds. `:rules` / `:llm` = knowledge source; rows without a suffix do not use one. Per-fold values: "
    "SIGNAL_folds.csv.",
]


def write_md(out: Path, folds: pd.DataFrame, cov: pd.DataFrame, neural: pd.DataFrame, seconds: float) -> None:
    folds = folds.assign(key=[f"{f}:{s}" if s != "-" else f for f, s in zip(folds.feature_set, folds.source)])
    cohorts = list(dict.fromkeys(folds.cohort))
    keys = list(dict.fromkeys(folds.key))
    mean = folds.groupby(["key", "cohort"])["c_index"].mean().unstack()
    L = ["# Where the survival signal of pathology reports is lost: linear probes",
         "", f"Generated by `python experiments/tcga/signal_probe.py` ({seconds:.0f} s); do not edit by hand.", "",
         "## Protocol", "", *PROTOCOL, "", "## Mean C-index", "", *_mean_table(mean, keys, cohorts, "feature set"), ""]
    if len(neural):
        L += ["Benchmark rows (experiments/tcga/folds.csv: same folds; neural models last-epoch) for comparison:", "",
              *_mean_table(neural, list(neural.index), cohorts, "model"), ""]
    else:
        L += ["Benchmark rows: left out (experiments/tcga/folds.csv holds no row of the current benchmark's models "
              f"{', '.join(NEURAL)}: it is an earlier benchmark's, or absent); the model question is not answered here.", ""]
    L += ["## Answer per cohort", "",
          f"Per source, the first stage where the signal drops (a gap counts above {GAP} C; 'little signal' = below "
          f"{CHANCE}): content = max(fields, field tokens, statements) < {CHANCE}; encoder = fields ≥ {CHANCE} but "
          "both embeddings more than the gap below them; model = the neural text-only model reading the source "
          "(for rules: `text_nested`, else `text@ens3`, else `text`, which read field tokens + statements + grounded PBK; "
          "no text-only row reads the llm source) "
          "more than the gap below the linear probe on the same tokens.", ""]
    for c in cohorts:
        nn = neural[c].dropna().to_dict() if c in neural else {}
        L.append(f"- **{c.upper()}**: " + verdict(mean[c].to_dict(), nn))
    L += ["", "## Mean ± std per cohort", ""]
    for c in cohorts:
        g = folds[folds.cohort == c]
        L += [f"### {c.upper()}", "", "| feature set | C-index | folds 0–4 |", "|---|---|---|"]
        for k in keys:
            x = g[g.key == k].sort_values("fold")["c_index"]
            L.append(f"| {k} | {_ms(x)} | " + " ".join(f"{v:.3f}" for v in x) + " |")
        L.append("")
    L += coverage_md(cov)
    atomic_write_text(out, "\n".join(L) + "\n")


def coverage_md(cov: pd.DataFrame) -> list[str]:
    L = ["## Knowledge content per source", "",
         "Share of the fold patients with a non-missing field; statements = embedded statements over those patients; "
         "'in ≥ half' = distinct statements that occur in at least half of the reports (near-constant, e.g. the site); "
         "field tokens = patients with at least one field sentence, sentences per such patient, distinct sentences.", "",
         "| cohort | source | patients | with text | with report | stage | grade | pT | statements | distinct | "
         "in ≥ half | with field tokens | per patient | distinct field sentences |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in cov.iterrows():
        L.append(f"| {r.cohort} | {r.kind} | {r.patients} | {r.with_text} | {r.with_report} | {r.has_stage:.2f} | "
                 f"{r.has_grade:.2f} | {r.has_pT:.2f} | {r.statements} | {r.distinct_statements} | "
                 f"{r.statements_in_half_of_reports} | {r.with_field_tokens} | {r.field_tokens_per_patient:.1f} | "
                 f"{r.distinct_field_sentences} |")
    return L + [""]


def neural_rows(folds_csv: Path) -> pd.DataFrame:
    """Mean C per (benchmark model of ``NEURAL``, cohort) from folds.csv; empty when it has none of them."""
    if not folds_csv.is_file():
        return pd.DataFrame()
    r = pd.read_csv(folds_csv)
    if not r.model.astype(str).str.contains("@").any():  # an earlier benchmark's file (labels without a profile)
        return pd.DataFrame()
    r = r[r.model.isin(NEURAL)]
    if r.empty:
        return pd.DataFrame()
    m = r.groupby(["model", "cohort"])["c_index"].mean().unstack()
    return m.reindex([k for k in NEURAL if k in m.index])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, required=True, help="shared/data/raw")
    ap.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("KEMM_CACHE_DIR", "knowledge_cache")),
                    help="the knowledge cache `kemm benchmark --stages sources` built (read only)")
    ap.add_argument("--cohorts", default=None, help="comma-separated, e.g. blca,luad (default: every config)")
    ap.add_argument("--out", type=Path, default=HERE / "SIGNAL.md", help="SIGNAL.md; SIGNAL_folds.csv goes beside it")
    ap.add_argument("--exp-dir", type=Path, default=HERE)
    ap.add_argument("--folds-csv", type=Path, default=HERE / "folds.csv", help="benchmark per-fold results to compare")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    _, specs = load_cohort_specs(a.exp_dir, a.cohorts.split(",") if a.cohorts else None)
    rows, covs = [], []
    for spec in specs:
        r, c = probe_cohort(spec, a.data_root, a.cache_dir)
        rows, covs = rows + r, covs + c
        # written after every cohort, so an interrupted run leaves the cohorts it finished
        folds = pd.DataFrame(rows)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.out.with_name(a.out.stem + "_folds.csv"), folds.to_csv(index=False))
        write_md(a.out, folds, pd.DataFrame(covs), neural_rows(a.folds_csv), time.perf_counter() - t0)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
