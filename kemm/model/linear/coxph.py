"""Penalised Cox proportional hazards on clinical covariates, saved as plain data.

:class:`CoxPHClinical` is the estimator (lifelines ``CoxPHFitter`` fits it).  Once fitted,
everything a prediction needs is plain numbers: the encoding (training medians,
categories), the coefficients, the training covariate means lifelines centres on,
and the Breslow baseline cumulative hazard.  ``to_state()`` / ``from_state()`` write and
rebuild exactly that (JSON-safe), and predictions are computed from it with the same
operations lifelines uses, so a model rebuilt from JSON predicts bit for bit what the
fitted one does (``tests/model/linear/test_coxph.py`` checks against a pickled fitter).

:class:`CoxPHFoldModel` is the :class:`~kemm.model.run.foldmodel.FoldModel` adapter the
cross-validation harness uses (reads the clinical frame of ``FoldInputs``).

Imports: numpy, pandas, ``kemm.model.data``, ``kemm.model.errors``; lifelines lazily in ``fit``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from kemm import __version__
from kemm.model.errors import RunError
from kemm.model.run.foldmodel import FoldInputs
from kemm.model.run.rundir import FoldFiles

STATE_FORMAT = "kemm.coxph_clinical/1"


class CoxPHClinical:
    """Penalised Cox proportional hazards on clinical covariates (lifelines ``CoxPHFitter``).

    Preprocessing is fitted on the training data only:
    - numeric columns: NaN -> training median, plus a ``<col>__missing`` indicator when the
      training column had NaN;
    - categorical (object / category / bool / string) columns: one-hot of the training
      categories (NaN is its own ``__nan`` category); unseen categories -> all zeros;
    - columns constant after encoding are dropped.

    Args:
        penalizer: L2 penalty (lifelines ``penalizer``), > 0 keeps small cohorts stable.
        l1_ratio: elastic-net mix passed to lifelines.

    Fitted attributes: ``columns_`` (encoded columns used), ``coef_`` ``[C]``, ``norm_mean_`` ``[C]``
    (training means lifelines centres on), ``baseline_times_`` / ``baseline_cumhaz_`` ``[T]``
    (Breslow baseline cumulative hazard at the centre), and, right after ``fit``, ``model_``
    (the ``CoxPHFitter``; not part of the saved state).
    """

    def __init__(self, penalizer: float = 0.1, l1_ratio: float = 0.0) -> None:
        self.penalizer = penalizer
        self.l1_ratio = l1_ratio

    # -- preprocessing ---------------------------------------------------------------
    @staticmethod
    def _is_categorical(s: pd.Series) -> bool:
        return not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)

    def _fit_encoding(self, X: pd.DataFrame) -> None:
        self.numeric_: dict[str, tuple[float, bool]] = {}
        self.categories_: dict[str, list[str]] = {}
        for col in X.columns:
            s = X[col]
            if self._is_categorical(s):
                self.categories_[col] = sorted(set(s.astype(object).where(s.notna(), "__nan").astype(str)))
            else:
                med = float(s.median()) if s.notna().any() else 0.0
                self.numeric_[col] = (med, bool(s.isna().any()))

    def _encode(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in (*self.numeric_, *self.categories_) if c not in X.columns]
        if missing:
            raise ValueError(f"CoxPHClinical: columns {missing} seen in fit() are missing from X")
        out: dict[str, np.ndarray] = {}
        for col, (med, add_ind) in self.numeric_.items():
            s = pd.to_numeric(X[col], errors="coerce").astype(float)
            out[col] = s.fillna(med).to_numpy()
            if add_ind:
                out[f"{col}__missing"] = s.isna().to_numpy(dtype=float)
        for col, cats in self.categories_.items():
            s = X[col].astype(object).where(X[col].notna(), "__nan").astype(str).to_numpy()
            for c in cats:
                out[f"{col}={c}"] = (s == c).astype(float)
        return pd.DataFrame(out, index=X.index)

    # -- estimator API ---------------------------------------------------------------
    def fit(self, X: pd.DataFrame, time, event) -> CoxPHClinical:
        """Fit on covariates ``X`` ``[n, C]``, follow-up ``time`` ``[n]`` and ``event`` ``[n]`` (1 = event)."""
        from lifelines import CoxPHFitter  # lazy: lifelines adds ~1 s to `import kemm.model` and only CoxPH fits need it

        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"CoxPHClinical.fit expects a pandas DataFrame, got {type(X).__name__}")
        time, event = np.asarray(time, dtype=float), np.asarray(event).astype(bool)
        if not len(X) == len(time) == len(event):
            raise ValueError(f"length mismatch: X has {len(X)} rows, time {len(time)}, event {len(event)}")
        if not np.isfinite(time).all() or (time < 0).any():
            raise ValueError("time must be finite and >= 0")
        if not event.any():
            raise ValueError("CoxPHClinical.fit: all samples are censored; a Cox model needs at least one event")
        self._fit_encoding(X)
        enc = self._encode(X)
        enc = enc.loc[:, enc.nunique(dropna=False) > 1]
        if enc.shape[1] == 0:
            raise ValueError(
                f"CoxPHClinical: no usable clinical column (input columns {list(X.columns)} are empty or constant "
                "after encoding); pass at least one varying covariate"
            )
        self.columns_ = list(enc.columns)
        df = enc.assign(__time=time, __event=event.astype(int))
        self.model_ = CoxPHFitter(penalizer=self.penalizer, l1_ratio=self.l1_ratio)
        self.model_.fit(df, duration_col="__time", event_col="__event")
        self.capture(self.model_)
        return self

    def capture(self, fitter: Any) -> None:
        """Copy what predictions need out of a fitted lifelines ``CoxPHFitter``."""
        self.coef_ = np.asarray(fitter.params_.loc[self.columns_], dtype=float)
        self.norm_mean_ = np.asarray(fitter._norm_mean.loc[self.columns_], dtype=float)
        bch = fitter.baseline_cumulative_hazard_
        self.baseline_times_ = np.asarray(bch.index.values, dtype=float)
        self.baseline_cumhaz_ = np.asarray(bch.values, dtype=float).reshape(-1)

    def _design(self, X: pd.DataFrame) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise RuntimeError("CoxPHClinical is not fitted; call fit() first")
        return self._encode(X)[self.columns_].values.astype(float)

    def predict_risk(self, X: pd.DataFrame) -> np.ndarray:
        """Log partial hazard ``[n]``; higher = worse (the sign scikit-survival expects).

        ``(x - mean_train) . coef``, the operations of lifelines' ``predict_log_partial_hazard``.
        """
        return np.dot(self._design(X) - self.norm_mean_, self.coef_).reshape(-1)

    def predict_survival(self, X: pd.DataFrame, times) -> np.ndarray:
        """Survival probabilities ``[n, len(times)]`` at ``times``.

        ``exp(-H0(t) * exp(risk))`` with H0 linearly interpolated, as lifelines computes it.
        """
        times = np.asarray(times, dtype=float).reshape(-1)
        partial = np.exp(self.predict_risk(X))  # [n]
        n = len(partial)
        h0 = np.interp(np.tile(times, (n, 1)), self.baseline_times_, self.baseline_cumhaz_).T  # [T, n]
        return np.exp(-(h0 * partial)).T

    # -- plain-data state ------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Everything predictions need, as JSON-safe data (floats round-trip exactly)."""
        if not hasattr(self, "coef_"):
            raise RuntimeError("CoxPHClinical is not fitted; call fit() first")
        return {
            "format": STATE_FORMAT,
            "penalizer": self.penalizer,
            "l1_ratio": self.l1_ratio,
            "numeric": {c: [med, ind] for c, (med, ind) in self.numeric_.items()},
            "categories": self.categories_,
            "columns": self.columns_,
            "coef": self.coef_.tolist(),
            "norm_mean": self.norm_mean_.tolist(),
            "baseline_times": self.baseline_times_.tolist(),
            "baseline_cumulative_hazard": self.baseline_cumhaz_.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], source: str = "CoxPH state") -> CoxPHClinical:
        """Rebuild a fitted model from :meth:`to_state` output."""
        if state.get("format") != STATE_FORMAT:
            raise RunError(f"{source}: format {state.get('format')!r}, expected {STATE_FORMAT!r}")
        m = cls(penalizer=state["penalizer"], l1_ratio=state["l1_ratio"])
        m.numeric_ = {c: (float(med), bool(ind)) for c, (med, ind) in state["numeric"].items()}
        m.categories_ = {c: list(v) for c, v in state["categories"].items()}
        m.columns_ = list(state["columns"])
        m.coef_ = np.asarray(state["coef"], dtype=float)
        m.norm_mean_ = np.asarray(state["norm_mean"], dtype=float)
        m.baseline_times_ = np.asarray(state["baseline_times"], dtype=float)
        m.baseline_cumhaz_ = np.asarray(state["baseline_cumulative_hazard"], dtype=float)
        if not len(m.coef_) == len(m.norm_mean_) == len(m.columns_):
            raise RunError(f"{source}: coef, norm_mean and columns differ in length")
        return m


class CoxPHFoldModel:
    """The CoxPH baseline as a fold model: reads ``FoldInputs.clinical`` (raw covariates per case)."""

    name = "coxph"
    uses_clinical = True

    def __init__(self, key: str = "coxph", hparams: dict[str, Any] | None = None) -> None:
        self.key = key
        self.hparams = dict(hparams or {})
        self.model: CoxPHClinical | None = None
        self.edges: np.ndarray | None = None

    def _X(self, inputs: FoldInputs, ids: list[str]) -> pd.DataFrame:
        if inputs.clinical is None:
            raise RunError(f"model {self.key!r}: no clinical covariates given (data.clinical)")
        return inputs.clinical.loc[ids]

    def fit(self, inputs: FoldInputs, train_ids: list[str], edges: np.ndarray, seed: int) -> CoxPHFoldModel:
        """Fit on ``train_ids`` (``seed`` unused: the fit is deterministic)."""
        t = inputs.data.cohort.table.loc[train_ids]
        try:
            self.model = CoxPHClinical(**self.hparams).fit(self._X(inputs, train_ids), t["time"], t["event"])
        except (ValueError, TypeError) as e:
            raise RunError(f"model {self.key!r}: {e}") from None
        self.edges = np.asarray(edges, float)
        return self

    def _fitted(self) -> CoxPHClinical:
        if self.model is None:
            raise RuntimeError("CoxPHFoldModel is not fitted; call fit() or load() first")
        return self.model

    def predict_risk(self, inputs: FoldInputs, ids: list[str]) -> np.ndarray:
        """Log partial hazard ``[n]``."""
        return self._fitted().predict_risk(self._X(inputs, ids))

    def predict_survival(self, inputs: FoldInputs, ids: list[str], times: np.ndarray) -> np.ndarray:
        """``[n, len(times)]``."""
        return self._fitted().predict_survival(self._X(inputs, ids), times)

    def record(self) -> dict[str, Any]:
        return {"covariates": list(self._fitted().columns_)}

    def save(self, fold: FoldFiles) -> None:
        fold.write_json({
            "name": self.name,
            "key": self.key,
            "hparams": self.hparams,
            "edges": self.edges.tolist() if self.edges is not None else None,
            "kemm_version": __version__,
            "model": self._fitted().to_state(),
        })

    @classmethod
    def load(cls, fold: FoldFiles) -> CoxPHFoldModel:
        st = fold.read_json()
        if st.get("name", cls.name) != cls.name:  # a foreign fold file: never serve it as this model
            raise RunError(f"{fold.json_path}: holds a {st.get('name')!r} model, not {cls.name!r}; "
                           "retrain this model with `kemm train --restart`")
        m = cls(st.get("key", fold.model), st.get("hparams"))
        m.model = CoxPHClinical.from_state(st["model"], str(fold.json_path))
        m.edges = np.asarray(st["edges"], float) if st.get("edges") is not None else None
        return m
