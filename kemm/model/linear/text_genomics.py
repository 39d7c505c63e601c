"""Penalised CoxPH on age (+ sex) + TF-IDF/SVD of the report text + genomics PCA.

An optional fourth block reads a neural model's knowledge tokens (the linear part of ``text``
or ``kemm`` with ``train.linear_part.knowledge``): columns ``kemb:<j>`` hold a case's mean
token embedding (PCA, a missing-knowledge indicator where some training case has none) and
columns ``kind:<kind>`` say whether the case has a token of that kind (fields-v2 kinds carry
the value category, e.g. ``pN:2``; grounded PBK kinds carry the direction); kinds held by
fewer than ``min_df`` training cases are dropped.

The classical bar a deep model must clear (registry name ``coxph_text_genomics``). One
estimator, the verbs of every fold model: ``fit`` / ``predict_risk`` / ``predict_survival``
and ``to_state`` / ``from_state``.

Every transform (clinical imputation and scaling, the TF-IDF vocabulary and idf, the SVD,
the genomic imputation, scaling and PCA) and the penalty are fitted on the rows passed to
``fit`` only: the penalty strength is chosen on an elastic-net path by inner K-fold CV of
the training rows, each inner fold refitting every transform on its inner-training part.

Prediction always runs through the plain-data state (numpy on lists of floats), so a model
rebuilt by ``from_state(json.loads(json.dumps(m.to_state())))`` predicts identically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.model_selection import KFold, StratifiedKFold
from sksurv.linear_model import CoxnetSurvivalAnalysis
from sksurv.exceptions import NoComparablePairException
from sksurv.metrics import concordance_index_censored

from kemm import __version__
from kemm.model.errors import RunError
from kemm.model.run.foldmodel import FoldInputs
from kemm.model.run.rundir import FoldFiles

GENOMIC_SUFFIXES = ("_rnaseq", "_cnv", "_mut")
EMB_PREFIX, KIND_PREFIX = "kemb:", "kind:"  # knowledge-token columns (kemm.model.run.linear_part)
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
STATE_KIND = "coxph_text_genomics"


class TextGenomicsInputError(ValueError):
    """Input the model cannot use; the message names the argument, case or column and the expected form."""


@dataclass
class TextGenomicsParams:
    """Fixed a priori (not tuned on any reported fold); only the penalty strength is chosen, by inner CV."""

    n_text_components: int = 50
    n_genomic_components: int = 20
    n_knowledge_components: int = 20
    max_features: int = 5000
    min_df: int = 3
    max_df: float = 0.95
    l1_ratio: float = 0.5
    n_alphas: int = 20
    alpha_min_ratio: float = 0.01
    inner_folds: int = 3
    clinical: tuple[str, ...] = ("age", "sex")
    seed: int = 0


# -- input checks ------------------------------------------------------------------------
def _check_texts(X: pd.DataFrame, texts: pd.Series) -> pd.Series:
    """``texts`` aligned to ``X.index``; NaN/None -> "" (a case without a report)."""
    if not isinstance(X, pd.DataFrame):
        raise TextGenomicsInputError(f"X must be a pandas DataFrame (rows = cases), got {type(X).__name__}")
    if not isinstance(texts, pd.Series):
        raise TextGenomicsInputError(f"texts must be a pandas Series of report texts indexed by case id, got {type(texts).__name__}")
    if len(texts) != len(X):
        raise TextGenomicsInputError(f"length mismatch: X has {len(X)} rows, texts has {len(texts)}; give one text per case ('' for none)")
    missing = X.index.difference(texts.index)
    if len(missing):
        raise TextGenomicsInputError(f"texts has no entry for case {missing[0]!r} ({len(missing)} such); index texts by the case ids of X, '' for no report")
    t = texts.reindex(X.index)
    bad = t[t.notna() & ~t.map(lambda v: isinstance(v, str))]
    if len(bad):
        raise TextGenomicsInputError(f"texts[{bad.index[0]!r}] is {type(bad.iloc[0]).__name__}, expected a string ('' for no report)")
    return t.fillna("").astype(str)


def _check_labels(time: Any, event: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(time, dtype=float).reshape(-1)
    e = np.asarray(event).reshape(-1)
    if len(t) != n or len(e) != n:
        raise TextGenomicsInputError(f"length mismatch: X has {n} rows, time has {len(t)}, event has {len(e)}")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        i = int(np.flatnonzero(~np.isfinite(t) | (t < 0))[0])
        raise TextGenomicsInputError(f"time[{i}] = {t[i]!r}; survival times must be finite and >= 0")
    if not np.isin(e, [0, 1, True, False]).all():
        raise TextGenomicsInputError("event must be 0/1 (1 = event observed)")
    e = e.astype(bool)
    if not e.any():
        raise TextGenomicsInputError(f"all {n} training cases are censored (event = 0); a Cox model needs at least one event")
    return t, e


def _numeric(X: pd.DataFrame, cols: list[str], what: str) -> np.ndarray:
    """``[n, len(cols)]`` float; a non-numeric cell is an error naming case and column."""
    missing = [c for c in cols if c not in X.columns]
    if missing:
        raise TextGenomicsInputError(f"X lacks the {what} column(s) {missing[:5]} the model was fitted with ({len(missing)} missing)")
    sub = X[cols]
    if all(pd.api.types.is_numeric_dtype(d) and not pd.api.types.is_bool_dtype(d) for d in sub.dtypes):
        return sub.to_numpy(dtype=float)  # fast path: thousands of genomic columns, already numbers
    num = sub.apply(pd.to_numeric, errors="coerce")
    bad = num.isna() & sub.notna()
    if bad.to_numpy().any():
        r, c = np.argwhere(bad.to_numpy())[0]
        raise TextGenomicsInputError(f"X[{sub.index[r]!r}, {cols[c]!r}] = {sub.iat[r, c]!r}; expected a number (NaN = missing)")
    return num.to_numpy(dtype=float)


# -- transforms: fit returns plain state, apply uses only that state ---------------------
def _fit_scale(Z: np.ndarray) -> dict[str, list[float]]:
    sd = Z.std(axis=0)
    return {"mean": Z.mean(axis=0).tolist(), "std": np.where(sd > 0, sd, 1.0).tolist()}


def _scale(Z: np.ndarray, st: dict) -> np.ndarray:
    return (Z - np.asarray(st["mean"])) / np.asarray(st["std"])


def _fit_clinical(X: pd.DataFrame, names: tuple[str, ...]) -> dict | None:
    """Median imputation + missing indicators (where the training rows have gaps) + scaling."""
    cols = [c for c in names if c in X.columns and pd.to_numeric(X[c], errors="coerce").notna().any()]
    if not cols:
        return None
    A = _numeric(X, cols, "clinical")
    med = np.nanmedian(A, axis=0)
    st = {"columns": cols, "median": med.tolist(), "indicator": [bool(v) for v in np.isnan(A).any(axis=0)]}
    st["scale"] = _fit_scale(_clinical_raw(A, st))
    return st


def _clinical_raw(A: np.ndarray, st: dict) -> np.ndarray:
    miss = np.isnan(A)
    filled = np.where(miss, np.asarray(st["median"]), A)
    ind = miss[:, np.asarray(st["indicator"], dtype=bool)].astype(float)
    return np.hstack([filled, ind])


def _apply_clinical(X: pd.DataFrame, st: dict) -> np.ndarray:
    return _scale(_clinical_raw(_numeric(X, st["columns"], "clinical"), st), st["scale"])


def _tfidf(texts: list[str], vocab: list[str], idf: np.ndarray) -> sparse.csr_matrix:
    """``[n, V]`` sublinear-tf x smooth-idf, rows l2-normalised (an empty text is a zero row)."""
    cv = CountVectorizer(vocabulary={w: i for i, w in enumerate(vocab)}, lowercase=True, token_pattern=TOKEN_PATTERN)
    M = cv.transform(texts).astype(float).tocsr()
    M.data = 1.0 + np.log(M.data)
    M = M @ sparse.diags(idf)
    norm = np.sqrt(np.asarray(M.multiply(M).sum(axis=1)).ravel())
    return sparse.diags(1.0 / np.where(norm > 0, norm, 1.0)) @ M


def _fit_text(texts: list[str], p: TextGenomicsParams) -> dict | None:
    if not any(t.strip() for t in texts):
        return None
    n = len(texts)
    try:
        cv = CountVectorizer(lowercase=True, token_pattern=TOKEN_PATTERN, min_df=min(p.min_df, n), max_df=p.max_df,
                             max_features=p.max_features).fit(texts)
    except ValueError:  # every term pruned by min_df/max_df on a small training set: keep every term
        cv = CountVectorizer(lowercase=True, token_pattern=TOKEN_PATTERN).fit(texts)
    vocab = [w for w, _ in sorted(cv.vocabulary_.items(), key=lambda kv: kv[1])]
    df = np.asarray((cv.transform(texts) > 0).sum(axis=0)).ravel()
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    k = min(p.n_text_components, len(vocab) - 1, n - 1)
    if k < 1:
        return None
    M = _tfidf(texts, vocab, idf)
    svd = TruncatedSVD(n_components=k, random_state=p.seed).fit(M)
    st = {"vocabulary": vocab, "idf": idf.tolist(), "components": svd.components_.tolist()}
    st["scale"] = _fit_scale(np.asarray(M @ svd.components_.T))
    return st


def _apply_text(texts: list[str], st: dict) -> np.ndarray:
    M = _tfidf(texts, st["vocabulary"], np.asarray(st["idf"]))
    return _scale(np.asarray(M @ np.asarray(st["components"]).T), st["scale"])


def _is_knowledge(c: Any) -> bool:
    return str(c).startswith((EMB_PREFIX, KIND_PREFIX))


def _fit_genomics(X: pd.DataFrame, p: TextGenomicsParams) -> dict | None:
    cols = [c for c in X.columns if str(c).endswith(GENOMIC_SUFFIXES) and not _is_knowledge(c)]
    if not cols:
        return None
    A = _numeric(X, cols, "genomic")
    med = np.nanmedian(A, axis=0)
    med = np.where(np.isnan(med), 0.0, med)  # a column empty in training carries nothing
    st = {"columns": cols, "median": med.tolist()}
    st["scale"] = _fit_scale(np.where(np.isnan(A), med, A))
    Z = _scale(np.where(np.isnan(A), med, A), st["scale"])
    k = min(p.n_genomic_components, Z.shape[0] - 1, Z.shape[1])
    if k < 1:
        return None
    pca = PCA(n_components=k, random_state=p.seed).fit(Z)
    st["pca_mean"], st["components"] = pca.mean_.tolist(), pca.components_.tolist()
    st["pc_scale"] = _fit_scale((Z - pca.mean_) @ pca.components_.T)
    return st


def _apply_genomics(X: pd.DataFrame, st: dict) -> np.ndarray:
    A = _numeric(X, st["columns"], "genomic")
    Z = _scale(np.where(np.isnan(A), np.asarray(st["median"]), A), st["scale"])
    return _scale((Z - np.asarray(st["pca_mean"])) @ np.asarray(st["components"]).T, st["pc_scale"])


def _fit_knowledge(X: pd.DataFrame, p: TextGenomicsParams) -> dict | None:
    """Mean token embedding -> PCA (+ missing indicator) and kind indicators held by >= min_df cases."""
    emb = [c for c in X.columns if str(c).startswith(EMB_PREFIX)]
    kinds = [c for c in X.columns if str(c).startswith(KIND_PREFIX)]
    st: dict[str, Any] = {"emb_columns": [], "kind_columns": []}
    if emb:
        A = _numeric(X, emb, "knowledge embedding")
        have = ~np.isnan(A).any(axis=1)
        k = min(p.n_knowledge_components, int(have.sum()) - 1, len(emb))
        if k >= 1:
            mean = A[have].mean(axis=0)
            Z = np.where(np.isnan(A), mean, A)
            pca = PCA(n_components=k, random_state=p.seed).fit(Z[have])
            st.update(emb_columns=emb, emb_mean=mean.tolist(), pca_mean=pca.mean_.tolist(),
                      components=pca.components_.tolist(), indicator=bool((~have).any()))
    if kinds:
        K = np.nan_to_num(_numeric(X, kinds, "knowledge kind"))
        n_with = (K > 0).sum(axis=0)
        keep = (n_with >= min(p.min_df, len(X))) & (n_with < len(X))  # a kind every case has says nothing
        st["kind_columns"] = [c for c, k in zip(kinds, keep) if k]
    if not st["emb_columns"] and not st["kind_columns"]:
        return None
    st["scale"] = _fit_scale(_knowledge_raw(X, st))
    return st


def _knowledge_raw(X: pd.DataFrame, st: dict) -> np.ndarray:
    parts = []
    if st["emb_columns"]:
        A = _numeric(X, st["emb_columns"], "knowledge embedding")
        miss = np.isnan(A).any(axis=1)
        Z = np.where(np.isnan(A), np.asarray(st["emb_mean"]), A)
        parts.append((Z - np.asarray(st["pca_mean"])) @ np.asarray(st["components"]).T)
        if st["indicator"]:
            parts.append(miss[:, None].astype(float))
    if st["kind_columns"]:
        cols = st["kind_columns"]
        K = X.reindex(columns=cols).apply(pd.to_numeric, errors="coerce").fillna(0.0).to_numpy(float)
        parts.append((K > 0).astype(float))  # a kind unseen in training is no column; absent here = 0
    return np.hstack(parts)


def fit_blocks(X: pd.DataFrame, texts: list[str], p: TextGenomicsParams) -> dict:
    """Plain state of every block fitted on these rows (a block without data is None)."""
    st = {"clinical": _fit_clinical(X, p.clinical), "text": _fit_text(texts, p), "genomics": _fit_genomics(X, p),
          "knowledge": _fit_knowledge(X, p)}
    if st["text"] is None and st["genomics"] is None and st["knowledge"] is None:
        raise TextGenomicsInputError("no report text (every text is empty), no genomic columns (*_rnaseq|*_cnv|*_mut) "
                                     "and no knowledge-token columns in X: nothing for this model; use the clinical "
                                     "CoxPH instead")
    return st


def design(X: pd.DataFrame, texts: list[str], blocks: dict) -> np.ndarray:
    """``[n, p]`` design matrix from the fitted blocks: clinical | text SVD | genomic PCs | knowledge."""
    parts = []
    if blocks["clinical"] is not None:
        parts.append(_apply_clinical(X, blocks["clinical"]))
    if blocks["text"] is not None:
        parts.append(_apply_text(texts, blocks["text"]))
    if blocks["genomics"] is not None:
        parts.append(_apply_genomics(X, blocks["genomics"]))
    if blocks.get("knowledge") is not None:  # states saved before the block existed have no key
        parts.append(_scale(_knowledge_raw(X, blocks["knowledge"]), blocks["knowledge"]["scale"]))
    return np.hstack(parts)


# -- penalty ----------------------------------------------------------------------------
def _surv_y(t: np.ndarray, e: np.ndarray) -> np.ndarray:
    return np.array(list(zip(e, t)), dtype=[("event", bool), ("time", float)])


def _coxnet(Z: np.ndarray, t: np.ndarray, e: np.ndarray, p: TextGenomicsParams, alphas: np.ndarray | None) -> CoxnetSurvivalAnalysis:
    """Elastic-net Cox path; a path that breaks down at the smallest alphas is refitted shorter."""
    ratio = p.alpha_min_ratio
    for _ in range(4):
        m = CoxnetSurvivalAnalysis(l1_ratio=p.l1_ratio, n_alphas=p.n_alphas, alpha_min_ratio=ratio, alphas=alphas, max_iter=20000)
        try:
            return m.fit(Z, _surv_y(t, e))
        except ArithmeticError:  # near-separable data at tiny penalties: keep the stable part of the path
            ratio, alphas = ratio * 5, None if alphas is None else alphas[: max(2, len(alphas) // 2)]
    raise TextGenomicsInputError("the penalised Cox fit did not converge at any penalty; check for constant or duplicated features")


def _c_index(e: np.ndarray, t: np.ndarray, risk: np.ndarray) -> float:
    try:
        return float(concordance_index_censored(e, t, risk)[0])
    except NoComparablePairException:  # an inner fold without a comparable pair scores nothing
        return float("nan")


def _inner_splits(e: np.ndarray, p: TextGenomicsParams) -> list[tuple[np.ndarray, np.ndarray]]:
    k = min(p.inner_folds, int(e.sum()), int((~e).sum()))
    if k >= 2:
        return list(StratifiedKFold(k, shuffle=True, random_state=p.seed).split(e, e))
    return list(KFold(max(2, min(p.inner_folds, len(e) // 2)), shuffle=True, random_state=p.seed).split(e))


def select_alpha(X: pd.DataFrame, texts: list[str], t: np.ndarray, e: np.ndarray, p: TextGenomicsParams,
                 alphas: np.ndarray) -> tuple[int, list[float]]:
    """Index of the alpha with the best mean inner-CV C-index, and the mean C per alpha.

    Each inner fold refits every transform on its inner-training rows only.
    """
    scores = np.full((0, len(alphas)), np.nan)
    for tr, va in _inner_splits(e, p):
        if not e[tr].any() or not e[va].any():
            continue
        Xtr, Xva = X.iloc[tr], X.iloc[va]
        ttr, tva = [texts[i] for i in tr], [texts[i] for i in va]
        try:
            blocks = fit_blocks(Xtr, ttr, p)
        except TextGenomicsInputError:
            continue
        m = _coxnet(design(Xtr, ttr, blocks), t[tr], e[tr], p, alphas)
        Zva = design(Xva, tva, blocks)
        row = np.full(len(alphas), np.nan)
        for j in range(len(m.alphas_)):
            row[j] = _c_index(e[va], t[va], Zva @ m.coef_[:, j])
        scores = np.vstack([scores, row])
    if not len(scores):
        return len(alphas) - 1, [float("nan")] * len(alphas)
    defined = ~np.isnan(scores)
    mean = np.where(defined.any(axis=0), np.nansum(scores, axis=0) / np.maximum(defined.sum(axis=0), 1), -np.inf)
    return int(np.argmax(mean)), [float(v) for v in mean]


def breslow(eta: np.ndarray, t: np.ndarray, e: np.ndarray) -> tuple[list[float], list[float]]:
    """Breslow cumulative baseline hazard at the distinct event times: ``(times, H0)``."""
    order = np.argsort(t)
    ts, es, r = t[order], e[order], np.exp(eta[order])
    at_risk = np.cumsum(r[::-1])[::-1]  # sum of exp(eta) over cases with time >= ts[i]
    times = np.unique(ts[es])
    first = np.searchsorted(ts, times, side="left")
    d = np.array([es[(ts == u)].sum() for u in times], dtype=float)
    return times.tolist(), np.cumsum(d / at_risk[first]).tolist()


# -- the estimator ----------------------------------------------------------------------
class CoxPHTextGenomics:
    """Penalised CoxPH on age (+ sex) + report TF-IDF/SVD + genomics PCA.

    ``fit(X, texts, time, event)``: ``X`` [n, clinical + genomic columns] indexed by case id,
    ``texts`` a Series of report texts indexed by the same case ids ("" = no report).
    Fitted attributes end in ``_``; ``state_`` holds everything prediction needs.
    """

    def __init__(self, **params: Any) -> None:
        self.params = TextGenomicsParams(**params)
        self.state_: dict | None = None

    def fit(self, X: pd.DataFrame, texts: pd.Series, time: Any, event: Any) -> CoxPHTextGenomics:
        tx = _check_texts(X, texts).tolist()
        t, e = _check_labels(time, event, len(X))
        p = self.params
        blocks = fit_blocks(X, tx, p)
        Z = design(X, tx, blocks)
        path = _coxnet(Z, t, e, p, None)
        best, inner_c = select_alpha(X, tx, t, e, p, path.alphas_)
        beta = path.coef_[:, best]
        times, cumhaz = breslow(Z @ beta, t, e)
        self.state_ = {
            "kind": STATE_KIND, "version": 1, "params": {**asdict(p), "clinical": list(p.clinical)},
            "blocks": blocks, "coef": beta.tolist(), "alpha": float(path.alphas_[best]),
            "inner_cv": {"alphas": path.alphas_.tolist(), "c_index": inner_c},
            "baseline": {"times": times, "cumhaz": cumhaz},
        }
        return self

    def _state(self) -> dict:
        if self.state_ is None:
            raise TextGenomicsInputError("CoxPHTextGenomics is not fitted; call fit(X, texts, time, event) first")
        return self.state_

    def predict_risk(self, X: pd.DataFrame, texts: pd.Series) -> np.ndarray:
        """``[n]`` linear predictor; higher = worse (earlier event)."""
        st = self._state()
        return design(X, _check_texts(X, texts).tolist(), st["blocks"]) @ np.asarray(st["coef"])

    def predict_survival(self, X: pd.DataFrame, texts: pd.Series, times: Any) -> np.ndarray:
        """``[n, len(times)]`` S(t | x) = exp(-H0(t) exp(eta)), H0 = Breslow step function."""
        st = self._state()
        grid = np.asarray(times, dtype=float).reshape(-1)
        bt, bh = np.asarray(st["baseline"]["times"]), np.asarray(st["baseline"]["cumhaz"])
        idx = np.searchsorted(bt, grid, side="right") - 1
        h0 = np.where(idx >= 0, bh[np.clip(idx, 0, None)] if len(bh) else 0.0, 0.0)
        eta = np.minimum(self.predict_risk(X, texts), 700.0)  # exp(700) is finite; S is 0 there anyway
        return np.exp(-np.outer(np.exp(eta), h0))

    def to_state(self) -> dict:
        """Plain data only (lists, floats, strings): ``json.dumps`` works on it."""
        return self._state()

    @classmethod
    def from_state(cls, state: dict) -> CoxPHTextGenomics:
        if not isinstance(state, dict) or state.get("kind") != STATE_KIND:
            got = state.get("kind") if isinstance(state, dict) else type(state).__name__
            raise TextGenomicsInputError(f"not a {STATE_KIND} state (kind = {got!r})")
        params = {**state["params"], "clinical": tuple(state["params"]["clinical"])}
        m = cls(**params)
        m.state_ = state
        return m


# -- the fold-model adapter ----------------------------------------------------------------
class TextGenomicsFoldModel:
    """``coxph_text_genomics`` as a fold model.

    Reads age (+ sex) and the genomic columns from the cohort table (the configured genomic
    groups' columns, else every ``*_rnaseq/_cnv/_mut`` column) and the raw report text of each
    case from ``data.reports`` (a case without a report gets ""). Its state is plain JSON.
    """

    name = "coxph_text_genomics"
    uses_clinical = False

    def __init__(self, key: str = "coxph_text_genomics", hparams: dict[str, Any] | None = None) -> None:
        self.key = key
        self.hparams = dict(hparams or {})
        self.model: CoxPHTextGenomics | None = None
        self.edges: np.ndarray | None = None

    def _inputs(self, inputs: FoldInputs, ids: list[str]) -> tuple[pd.DataFrame, pd.Series]:
        data = inputs.data
        t = data.cohort.table
        params = TextGenomicsParams(**{k: v for k, v in self.hparams.items() if k != "clinical"})
        clinical = list(self.hparams.get("clinical", params.clinical))
        genomic = list(data.omic_columns) or [c for c in t.columns if str(c).endswith(GENOMIC_SUFFIXES)]
        missing = [c for c in clinical if c not in t.columns]
        if missing:
            raise RunError(f"model {self.key!r}: cohort {data.cohort.path} has no column(s) {missing} (hparams.clinical)")
        if data.report_texts is None:
            raise RunError(f"model {self.key!r} reads the raw report text: set data.reports to the report file(s)")
        X = t.loc[ids, clinical + genomic]
        texts = pd.Series([data.report_texts.get(c, "") for c in ids], index=ids, dtype=object)
        return X, texts

    def fit(self, inputs: FoldInputs, train_ids: list[str], edges: np.ndarray, seed: int) -> TextGenomicsFoldModel:
        t = inputs.data.cohort.table.loc[train_ids]
        X, texts = self._inputs(inputs, train_ids)
        try:
            self.model = CoxPHTextGenomics(**{**self.hparams, "seed": seed}).fit(X, texts, t["time"], t["event"])
        except (TextGenomicsInputError, ValueError, TypeError) as e:
            raise RunError(f"model {self.key!r}: {e}") from None
        self.edges = np.asarray(edges, float)
        return self

    def _fitted(self) -> CoxPHTextGenomics:
        if self.model is None:
            raise RuntimeError("TextGenomicsFoldModel is not fitted; call fit() or load() first")
        return self.model

    def predict_risk(self, inputs: FoldInputs, ids: list[str]) -> np.ndarray:
        return self._fitted().predict_risk(*self._inputs(inputs, ids))

    def predict_survival(self, inputs: FoldInputs, ids: list[str], times: np.ndarray) -> np.ndarray:
        return self._fitted().predict_survival(*self._inputs(inputs, ids), times)

    def record(self) -> dict[str, Any]:
        st = self._fitted().to_state()
        return {"alpha": st["alpha"], "n_coef_nonzero": int(np.count_nonzero(st["coef"]))}

    def save(self, fold: FoldFiles) -> None:
        fold.write_json({"name": self.name, "key": self.key, "hparams": self.hparams,
                         "edges": self.edges.tolist() if self.edges is not None else None,
                         "kemm_version": __version__, "model": self._fitted().to_state()})

    @classmethod
    def load(cls, fold: FoldFiles) -> TextGenomicsFoldModel:
        st = fold.read_json()
        if st.get("name", cls.name) != cls.name:  # a foreign fold file: never serve it as this model
            raise RunError(f"{fold.json_path}: holds a {st.get('name')!r} model, not {cls.name!r}; "
                           "retrain this model with `kemm train --restart`")
        m = cls(st.get("key", fold.model), st.get("hparams"))
        m.model = CoxPHTextGenomics.from_state(st["model"])
        m.edges = np.asarray(st["edges"], float) if st.get("edges") is not None else None
        return m
