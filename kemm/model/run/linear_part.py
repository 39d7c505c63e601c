"""The linear part of a neural survival model: a penalised CoxPH fitted beside the network.

With ``train.linear_part.enabled``, a neural fold model also fits the classical model
(``kemm.model.linear.text_genomics.CoxPHTextGenomics``: age/sex, TF-IDF/SVD of the raw
report text, genomics PCA, each block switchable; with ``knowledge``, also the network's
own knowledge tokens: their mean embedding and which token kinds the case has) on the
training patients. Two ways to
join it to the network (``linear_part.mode``):

- ``mixture`` (default): the network trains as it would alone; prediction averages the
  survival curves, ``weight`` for the linear model's (its Breslow curve read at the bin
  edges) and ``1 - weight`` for the network's (members of a seed ensemble averaged first).
  Why: on a few hundred patients the elastic-net fit (penalty by inner CV) and the network
  rank patients differently well from the same report and genomics; an average of two
  partly independent risk estimates is steadier than either.
- ``offset``: the linear predictor ``eta`` is added to every bin's hazard logit and the
  network learns the residual (``logits = net(x) + eta``, the output layer started at zero
  weights and the life-table bias). The training patients' offsets are cross-fitted
  (patient i's ``eta`` from a model fitted without i's part of the training fold) so the
  network never sees an in-sample, over-confident predictor; prediction uses the model
  fitted on every training patient. Both are centred by their mean over the training
  patients.

Nothing here reads the reported fold.

Imports: numpy, pandas, scikit-learn, ``kemm.model.linear.text_genomics``, ``kemm.model.run``
(config, foldmodel).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold

from kemm.model.errors import RunError
from kemm.model.linear.text_genomics import (
    EMB_PREFIX, GENOMIC_SUFFIXES, KIND_PREFIX, CoxPHTextGenomics, TextGenomicsInputError,
)
from kemm.model.run.config import LinearPartConfig
from kemm.model.run.foldmodel import FoldInputs

STATE_KIND = "linear_part"


def _design(inputs: FoldInputs, cfg: LinearPartConfig, ids: list[str], key: str) -> tuple[pd.DataFrame, pd.Series]:
    """``X`` [n, clinical + genomic columns] and the raw report texts of ``ids``."""
    data = inputs.data
    t = data.cohort.table
    missing = [c for c in cfg.clinical if c not in t.columns]
    if missing:
        raise RunError(f"model {key!r}: train.linear_part.clinical names column(s) {missing} that cohort "
                       f"{data.cohort.path} lacks (it has e.g. {list(t.columns[:6])})")
    genomic: list[str] = []
    if cfg.genomics:
        genomic = list(data.omic_columns) or [c for c in t.columns if str(c).endswith(GENOMIC_SUFFIXES)]
    if cfg.text and data.report_texts is None:
        raise RunError(f"model {key!r}: train.linear_part.text reads the raw report text; set data.reports "
                       "to the report file(s), or set train.linear_part.text: false")
    texts = [data.report_texts.get(c, "") for c in ids] if cfg.text else [""] * len(ids)
    X = t.loc[ids, list(cfg.clinical) + genomic]
    if cfg.knowledge:
        X = pd.concat([X, knowledge_columns(data, ids, key)], axis=1)
    return X, pd.Series(texts, index=ids, dtype=object)


def knowledge_columns(data, ids: list[str], key: str) -> pd.DataFrame:
    """Per case, the knowledge tokens the network reads, as columns: ``kemb:<j>`` the mean
    embedding of its report tokens (NaN without any) and ``kind:<kind>`` 1 where the case has
    a report or PBK token of that kind (grounded PBK per case, static PBK per cancer type)."""
    if data.report is None and data.pbk is None:
        raise RunError(f"model {key!r}: train.linear_part.knowledge reads the model's knowledge tokens, and its "
                       "profile gives none; set knowledge.report / knowledge.pbk, or set train.linear_part.knowledge: false")
    dim = data.text_dim or 0
    emb = np.full((len(ids), dim if data.report is not None else 0), np.nan)
    kinds: dict[str, np.ndarray] = {}

    def mark(table, k: str, i: int) -> None:
        for kind in set(table.kinds_of(k)):
            kinds.setdefault(f"{KIND_PREFIX}{kind}", np.zeros(len(ids)))[i] = 1.0

    for i, c in enumerate(ids):
        if data.report is not None and (r := data.report.get(c)) is not None:
            emb[i] = np.asarray(r, dtype=float).mean(axis=0)
            mark(data.report, c, i)
        if (k := data.pbk_key(c)) is not None:
            mark(data.pbk, k, i)
    cols = {f"{EMB_PREFIX}{j}": emb[:, j] for j in range(emb.shape[1])}
    cols.update(sorted(kinds.items()))
    return pd.DataFrame(cols, index=ids)


def _splits(event: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-fitting parts of the training fold, stratified by event where both classes allow it."""
    k_strat = min(k, int(event.sum()), int((~event).sum()))
    if k_strat >= 2:
        return list(StratifiedKFold(k_strat, shuffle=True, random_state=seed).split(event, event))
    return list(KFold(max(2, min(k, len(event) // 2)), shuffle=True, random_state=seed).split(event))


class LinearPart:
    """The fitted linear part of one fold: ``fit``, then ``offsets`` / ``survival_at`` for any ids.

    Fitted attributes end in ``_``: ``model_`` (the CoxPH on every training patient) and
    ``centre_`` (its mean linear predictor over them).
    """

    def __init__(self, cfg: LinearPartConfig, key: str = "model") -> None:
        self.cfg = cfg
        self.key = key
        self.model_: CoxPHTextGenomics | None = None
        self.centre_ = 0.0

    def _params(self, seed: int) -> dict[str, Any]:
        return {"clinical": tuple(self.cfg.clinical), "seed": seed}

    def _fit_one(self, X: pd.DataFrame, texts: pd.Series, time: np.ndarray, event: np.ndarray,
                 seed: int) -> CoxPHTextGenomics:
        try:
            return CoxPHTextGenomics(**self._params(seed)).fit(X, texts, time, event)
        except (TextGenomicsInputError, ValueError, TypeError) as e:
            raise RunError(f"model {self.key!r}: train.linear_part: {e}") from None

    def fit(self, inputs: FoldInputs, train_ids: list[str], seed: int) -> dict[str, float] | None:
        """Fit on ``train_ids``. Offset mode: returns their cross-fitted, centred offsets
        ``{case_id: eta}``; mixture mode: None (the network trains without them)."""
        X, texts = _design(inputs, self.cfg, train_ids, self.key)
        t = inputs.data.cohort.table.loc[train_ids]
        time, event = t["time"].to_numpy(float), t["event"].to_numpy().astype(bool)
        self.model_ = self._fit_one(X, texts, time, event, seed)
        self.centre_ = float(np.mean(self.model_.predict_risk(X, texts)))
        if self.cfg.mode != "offset":
            return None
        oof = np.zeros(len(train_ids))
        for tr, va in _splits(event, self.cfg.folds, seed):
            m = self._fit_one(X.iloc[tr], texts.iloc[tr], time[tr], event[tr], seed)
            oof[va] = m.predict_risk(X.iloc[va], texts.iloc[va])
        oof -= oof.mean()
        return dict(zip(train_ids, oof.tolist()))

    def offsets(self, inputs: FoldInputs, ids: list[str]) -> np.ndarray:
        """``[n]`` centred linear predictor of the model fitted on every training patient."""
        X, texts = _design(inputs, self.cfg, list(ids), self.key)
        try:
            return self._fitted().predict_risk(X, texts) - self.centre_
        except TextGenomicsInputError as e:
            raise RunError(f"model {self.key!r}: train.linear_part: {e}") from None

    def survival_at(self, inputs: FoldInputs, ids: list[str], edges: np.ndarray) -> np.ndarray:
        """``[n, n_bins]`` S at the end of each bin (``edges[1:]``; the last edge is past every
        training time, so it reads the Breslow curve's last value)."""
        X, texts = _design(inputs, self.cfg, list(ids), self.key)
        try:
            return self._fitted().predict_survival(X, texts, np.asarray(edges, float)[1:])
        except TextGenomicsInputError as e:
            raise RunError(f"model {self.key!r}: train.linear_part: {e}") from None

    def _fitted(self) -> CoxPHTextGenomics:
        if self.model_ is None:
            raise RuntimeError("LinearPart is not fitted; call fit() or from_state() first")
        return self.model_

    def record(self) -> dict[str, Any]:
        st = self.model_.to_state() if self.model_ is not None else {}
        return {"alpha": st.get("alpha"), "n_coef_nonzero": int(np.count_nonzero(st.get("coef", [])))}

    def to_state(self) -> dict[str, Any]:
        """Plain data (lists, floats, strings): fits a weights-only checkpoint and ``json.dumps``."""
        if self.model_ is None:
            raise RuntimeError("LinearPart is not fitted; nothing to save")
        return {"kind": STATE_KIND, "config": self.cfg.model_dump(), "centre": self.centre_,
                "model": self.model_.to_state()}

    @classmethod
    def from_state(cls, state: dict[str, Any], key: str = "model") -> LinearPart:
        if not isinstance(state, dict) or state.get("kind") != STATE_KIND:
            raise RunError(f"model {key!r}: the checkpoint's linear part is not a {STATE_KIND} state; "
                           "retrain this model with `kemm train --restart`")
        p = cls(LinearPartConfig.model_validate(state["config"]), key)
        p.model_ = CoxPHTextGenomics.from_state(state["model"])
        p.centre_ = float(state["centre"])
        return p
