"""Which knowledge a trained model used: pooling weights over a patient's knowledge tokens.

For one patient, the fold model whose validation fold holds the case (an out-of-fold
explanation) runs its forward pass with attention maps switched on; each knowledge
token of the patient is listed with its source (report / pbk), its statement kind
(``ModelSpec.kinds``, ids from the batch's ``report_kind`` / ``pbk_kind``), the statement
text and the weight the final attention pooling gives it.  In KEMM the pooling runs over
the tokens after KECM and the mixer, so a weight belongs to the token's *position*
(the statement plus what it gathered from WSI and genomics), which is what the head reads.
Where the model returns it, each token's attention over the genomic groups is listed too.

The cohort summary runs the same explanation for every out-of-fold patient and
averages per (source, kind): the share of pooling weight a kind receives and its
lift over uniform pooling (1 = attended as much as an average token).

Data are rebuilt from the run's ``config.yaml`` as in ``predict.py``; knowledge tables
held only in memory when the run was trained can be handed in (``report=``, ``pbk=``).

Imports: numpy, pandas, torch, matplotlib (Agg), ``kemm._io``, ``kemm.model.data``,
``kemm.model.nn.losses``, ``kemm.model.run`` (config, registry, neural, rundir); never ``train``.
"""
from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import kemm.knowledge as knowledge  # noqa: E402
from kemm._io import atomic_path, atomic_write_json  # noqa: E402
from kemm.model.data.clinical import read_report_fields  # noqa: E402
from kemm.model.data.dataset import SurvivalData, build_data, make_collate  # noqa: E402
from kemm.model.data.knowledge import TextTable  # noqa: E402
from kemm.model.errors import DataError, RunError  # noqa: E402
from kemm.model.nn.losses import risk_from_logits  # noqa: E402
from kemm.model.run.config import REPORT_FIELD_NAMES, ExperimentConfig, load_config  # noqa: E402
from kemm.model.run.foldmodel import FoldInputs  # noqa: E402
from kemm.model.run.neural import NeuralFoldModel  # noqa: E402
from kemm.model.run.registry import fold_model_class  # noqa: E402
from kemm.model.run.rundir import FoldFiles, RunDir  # noqa: E402

LABEL_CHARS = 70  # statement text shown per bar of the PNG
REPORT, PBK = "report", "pbk"


@dataclass
class Token:
    """One knowledge token of a patient, in the order the model reads them."""

    position: int  # index among the model's query tokens (after KEMM's truncation)
    source: str  # "report" | "pbk"
    kind: str  # statement kind (ModelSpec.kinds)
    text: str
    weight: float  # final pooling weight; valid tokens of a patient sum to 1
    omic: dict[str, float] = field(default_factory=dict)  # genomic group -> attention (KEMM with genomics)


@dataclass
class CaseExplanation:
    case_id: str
    model: str
    fold: int
    risk: float
    pbk_key: str | None  # the case (grounded PBK) or its cancer type (static PBK)
    tokens: list[Token]
    linear_part: str = ""  # train.linear_part of the model ("mixture 0.5" / "offset"); its risk includes it

    def frame(self) -> pd.DataFrame:
        rows = [{k: v for k, v in asdict(t).items() if k != "omic"} for t in self.tokens]
        df = pd.DataFrame(rows, columns=["position", "source", "kind", "text", "weight"])
        for t_i, t in enumerate(self.tokens):
            for g, w in t.omic.items():
                df.loc[t_i, f"omic:{g}"] = w
        return df


@dataclass
class ExplainContext:
    """A run's config, data and the model's folds (loaded once for a case or the cohort)."""

    run: RunDir
    cfg: ExperimentConfig
    model: str
    folds: list[FoldFiles]
    data: SurvivalData
    fold_of: dict[str, int]  # case id -> the fold whose validation set holds it


# -- loading ---------------------------------------------------------------------------
def open_run(run_dir: Path | str, model: str | None = None, report: TextTable | None = None,
             pbk: TextTable | None = None) -> ExplainContext:
    """The run's config, rebuilt data and the finished folds of ``model`` (default: the main model)."""
    run = RunDir(run_dir)
    if not run.is_run():
        raise RunError(f"{run.root}: not a run directory (no config.yaml)")
    cfg = load_config(run.config_path)
    model = model or cfg.main
    folds = run.folds_of(model)
    if not folds:
        raise RunError(f"{run.root}: no finished fold of model {model!r} (models with folds: "
                       f"{run.models_with_folds()}); train the run first or pick one with --model")
    name = folds[0].read_metrics().get("name", model)
    if fold_model_class(name) is not NeuralFoldModel:
        raise RunError(f"{run.root}: model {model!r} ({name}) is a linear model without knowledge tokens; "
                       "pick a knowledge model (kemm, text, ...) with --model")
    data = build_data(cfg.data, cfg.knowledge, report=report, pbk=pbk)
    if data.report is None and data.pbk is None:
        raise RunError(f"{run.root}: the run has no knowledge source (knowledge.report / knowledge.pbk in config.yaml); "
                       "nothing to explain")
    fold_of = {str(c): f.k for f in folds for c in f.read_predictions()["case_id"]}
    return ExplainContext(run, cfg, model, folds, data, fold_of)


def load_fold_model(ctx: ExplainContext, k: int) -> NeuralFoldModel:
    """Fold ``k``'s network, checked to read knowledge tokens."""
    fm = NeuralFoldModel.load(next(f for f in ctx.folds if f.k == k))
    if fm.spec is None or fm.spec.text_dim is None or getattr(fm.net, "knowledge", "") == "none":
        raise RunError(f"{fm.source}: model {ctx.model!r} ({fm.name}) reads no knowledge tokens "
                       "(learned queries only); pick a knowledge model with --model")
    if fm.clinical and set(fm.clinical) & set(REPORT_FIELD_NAMES) and ctx.data.report_fields is None:
        ctx.data.report_fields = read_report_fields(ctx.cfg.knowledge.cache_dir, ctx.cfg.knowledge.report_sources[0])
    return fm


# -- one patient -----------------------------------------------------------------------
def _batch(fm: NeuralFoldModel, data: SurvivalData, case_id: str) -> dict:
    """The one-patient batch, with the fold's fitted scaling and the network's kind vocabulary."""
    if data.kinds != list(fm.spec.kinds):
        data.kinds = list(fm.spec.kinds)  # kind ids must be those the network was trained with
    ds = data.dataset([case_id], fm.edges, fm.scaler, fm.clinical_scaler)
    return make_collate(fm.spec.wsi_dim, fm.spec.omic_dims, fm.spec.text_dim)([ds[0]])


@torch.no_grad()
def _forward(net: torch.nn.Module, batch: dict) -> dict:
    """``net(batch)`` in eval mode with attention maps on (the flag is restored)."""
    net.eval()
    had = getattr(net, "return_attn", None)
    if had is not None:
        net.return_attn = True
    try:
        return net(batch)
    finally:
        if had is not None:
            net.return_attn = had


def _candidates(net: torch.nn.Module, batch: dict, kinds: list[str], texts: dict[str, list[str]]) -> list[dict]:
    """The knowledge positions the network builds, in order (report then PBK, valid first if truncated)."""
    rows = []
    for src in (REPORT, PBK):
        if not getattr(net, f"use_{src}", True) or src not in batch:
            continue
        mask, kid = batch[f"{src}_mask"][0], batch[f"{src}_kind"][0]
        for i in range(mask.shape[0]):
            ok = bool(mask[i])
            rows.append({"source": src, "valid": ok, "kind": kinds[int(kid[i])] if ok else "",
                         "text": texts[src][i] if ok and i < len(texts[src]) else ""})
    cap = getattr(net, "max_knowledge_tokens", None)
    if cap is not None and len(rows) > cap:  # KEMM._truncate: valid tokens first, stable order
        rows = ([r for r in rows if r["valid"]] + [r for r in rows if not r["valid"]])[:cap]
    return rows


def _statements(data: SurvivalData, case_id: str) -> tuple[dict[str, list[str]], str | None]:
    """The patient's statement texts per source, and the key its PBK is read under."""
    texts = {REPORT: [], PBK: []}
    if data.report is not None and data.report.get(case_id) is not None:
        texts[REPORT] = list(data.report.statements.get(case_id, []))
    key = data.pbk_key(case_id)
    if key is not None:
        texts[PBK] = list(data.pbk.statements.get(key, []))
    return texts, key


def _tokens(fm: NeuralFoldModel, batch: dict, out: dict, texts: dict[str, list[str]]) -> list[Token]:
    """Valid knowledge tokens with their pooling (and genomic-group) weights."""
    attn = out.get("attn") or {}
    if "pool" not in attn or "query_mask" not in attn:
        raise RunError(f"{fm.source}: network {fm.name!r} returns no pooling weights over knowledge tokens; "
                       "explain reads KEMM and the text model")
    pool, qmask = attn["pool"][0].float(), attn["query_mask"][0].bool()
    rows = _candidates(fm.net, batch, list(fm.spec.kinds), texts)
    n_learned = pool.shape[0] - len(rows)
    if n_learned < 0 or (n_learned and n_learned != getattr(fm.net, "queries", torch.empty(0)).shape[0]):
        raise RunError(f"{fm.source}: {pool.shape[0]} pooled positions for {len(rows)} knowledge tokens; "
                       f"the layout of network {fm.name!r} is not one explain knows")
    omic = attn.get("omic")
    names = fm.groups.names if fm.groups is not None else []
    toks = []
    for p, r in enumerate(rows):
        if not (r["valid"] and bool(qmask[p])):
            continue
        og = {}
        if omic is not None and len(names) == omic.shape[-1]:
            og = {g: float(w) for g, w in zip(names, omic[0, p])}
        toks.append(Token(p, r["source"], r["kind"], r["text"], float(pool[p]), og))
    return toks


def explain_patient(ctx: ExplainContext, fm: NeuralFoldModel, case_id: str) -> CaseExplanation:
    """The knowledge tokens of ``case_id`` under fold model ``fm`` (its validation fold must hold the case)."""
    batch = _batch(fm, ctx.data, case_id)
    out = _forward(fm.net, batch)
    texts, key = _statements(ctx.data, case_id)
    risk, linear = float(risk_from_logits(out["logits"].float())[0]), ""
    if fm.linear is not None:  # the weights explain the network; the model's risk also holds the CoxPH part
        lc = fm.linear.cfg
        linear = f"mixture {lc.weight:g}" if lc.mode == "mixture" else "offset"
        risk = float(fm.predict_risk(FoldInputs(data=ctx.data), [case_id])[0])
    return CaseExplanation(case_id, ctx.model, ctx.fold_of[case_id], risk, key, _tokens(fm, batch, out, texts), linear)


def explain_case(run_dir: Path | str, case_id: str, model: str | None = None, report: TextTable | None = None,
                 pbk: TextTable | None = None) -> CaseExplanation:
    """Out-of-fold explanation of one patient of a run (see the module docstring)."""
    ctx = open_run(run_dir, model, report, pbk)
    if case_id not in ctx.fold_of:
        known = sorted(ctx.fold_of)
        raise DataError(f"{ctx.run.root}: case {case_id!r} is in no validation fold of model {ctx.model!r} "
                        f"({len(known)} cases, e.g. {known[:3]})")
    return explain_patient(ctx, load_fold_model(ctx, ctx.fold_of[case_id]), case_id)


# -- the cohort ------------------------------------------------------------------------
def explain_all(ctx: ExplainContext) -> list[CaseExplanation]:
    """Every out-of-fold patient, each by the model of its validation fold."""
    out = []
    for f in ctx.folds:
        fm = load_fold_model(ctx, f.k)
        out += [explain_patient(ctx, fm, c) for c, k in sorted(ctx.fold_of.items()) if k == f.k]
    return out


def cohort_summary(expls: list[CaseExplanation]) -> pd.DataFrame:
    """Per (source, statement type; a field kind's value category is folded: ``pT:3`` -> ``pT``): ``share`` (mean over patients of the kind's summed weight; 0 where the patient
    lacks it; the shares add up to 1 over kinds), ``lift`` (mean of weight x the patient's token count:
    1 = uniform pooling), ``n_patients`` with the kind, ``n_tokens``.  Sorted by share."""
    rows = [{"case_id": e.case_id, "source": t.source, "kind": knowledge.kind_field(t.kind), "weight": t.weight,
             "lift": t.weight * len(e.tokens)} for e in expls for t in e.tokens]
    cols = ["source", "kind", "share", "lift", "n_patients", "n_tokens"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    n = max(sum(1 for e in expls if e.tokens), 1)
    g = df.groupby(["source", "kind"])
    out = pd.DataFrame({
        "share": g["weight"].sum() / n,
        "lift": g["lift"].mean(),
        "n_patients": g["case_id"].nunique(),
        "n_tokens": g.size(),
    }).reset_index()
    return out.sort_values("share", ascending=False, kind="stable").reset_index(drop=True)[cols]


# -- writing ---------------------------------------------------------------------------
def _label(t: Token) -> str:
    text = " ".join(t.text.split()) or "(no text)"
    return f"[{t.kind}] " + textwrap.shorten(text, LABEL_CHARS, placeholder="...")


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")
    plt.close(fig)


def case_figure(e: CaseExplanation, max_tokens: int = 40) -> plt.Figure:
    """Horizontal bars of pooling weights (report blue, PBK orange), highest first; at most ``max_tokens``."""
    toks = sorted(e.tokens, key=lambda t: -t.weight)[:max_tokens]
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.32 * max(len(toks), 1)))
    y = np.arange(len(toks))
    colors = ["tab:blue" if t.source == REPORT else "tab:orange" for t in toks]
    ax.barh(y, [t.weight for t in toks], color=colors)
    ax.set_yticks(y, [_label(t) for t in toks], fontsize=8)
    ax.invert_yaxis()
    if toks:
        ax.axvline(1.0 / len(e.tokens), color="grey", ls="--", lw=0.8, label="uniform weight")
    ax.set_xlabel("pooling weight")
    more = f"; {len(e.tokens) - len(toks)} more not shown" if len(e.tokens) > len(toks) else ""
    lin = f"\nweights of the network; a linear CoxPH joins it ({e.linear_part}) and is in the risk" if e.linear_part else ""
    ax.set_title(f"{e.case_id}: {e.model}, fold {e.fold} (out-of-fold), risk {e.risk:.2f}; "
                 f"blue = report, orange = PBK{more}{lin}", fontsize=9, loc="left")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def write_case(e: CaseExplanation, out_dir: Path | str, stem: str | None = None) -> dict[str, Path]:
    """``<stem>.csv`` (one row per token), ``<stem>.json`` and ``<stem>.png`` under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or e.case_id
    paths = {x: out_dir / f"{stem}.{x}" for x in ("csv", "json", "png")}
    with atomic_path(paths["csv"]) as tmp:
        e.frame().to_csv(tmp, index=False)
    atomic_write_json(paths["json"], asdict(e))
    _save(case_figure(e), paths["png"])
    return paths


def cohort_figure(summary: pd.DataFrame, title: str) -> plt.Figure:
    """Horizontal bars of each kind's mean share of pooling weight, annotated with its lift."""
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.3 * max(len(summary), 1)))
    y = np.arange(len(summary))
    colors = ["tab:blue" if s == REPORT else "tab:orange" for s in summary["source"]]
    ax.barh(y, summary["share"], color=colors)
    ax.set_yticks(y, [f"{s}: {k}" for s, k in zip(summary["source"], summary["kind"])], fontsize=8)
    ax.invert_yaxis()
    for yi, (s, lift, n) in enumerate(zip(summary["share"], summary["lift"], summary["n_patients"])):
        ax.text(s, yi, f"  lift {lift:.2f}, {n} pts", va="center", fontsize=7)
    ax.set_xlabel("mean share of pooling weight per patient")
    ax.set_title(title, fontsize=9, loc="left")
    ax.margins(x=0.25)
    return fig


def write_cohort(summary: pd.DataFrame, out_dir: Path | str, title: str, stem: str = "cohort") -> dict[str, Path]:
    """``<stem>.csv`` and ``<stem>.png`` under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {x: out_dir / f"{stem}.{x}" for x in ("csv", "png")}
    with atomic_path(paths["csv"]) as tmp:
        summary.to_csv(tmp, index=False)
    _save(cohort_figure(summary, title), paths["png"])
    return paths
