"""Survival metrics (thin, validated wrappers around scikit-survival).

Sign convention everywhere: ``risk`` higher = earlier event (scikit-survival's). lifelines'
``concordance_index`` takes the opposite (predicted survival time): pass ``-risk`` there.

IPCW metrics (Uno's C, Brier, time-dependent AUC) estimate the censoring distribution on
the TRAINING fold, so they are only defined up to the training follow-up; the helpers
here keep every evaluation time inside that range and inside the test fold's range.
"""

from __future__ import annotations

import logging

import numpy as np
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

log = logging.getLogger(__name__)


def _arrays(time, event, *, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(time, dtype=float).reshape(-1)
    e = np.asarray(event).reshape(-1)
    if len(t) != len(e):
        raise ValueError(f"{name}time has {len(t)} entries but {name}event has {len(e)}")
    if not np.isfinite(t).all():
        raise ValueError(f"{name}time contains NaN or inf")
    if np.isnan(e.astype(float)).any():
        raise ValueError(f"{name}event contains NaN")
    if (t < 0).any():
        raise ValueError(f"{name}time must be >= 0")
    return t, e.astype(bool)


def _risk(risk, n: int) -> np.ndarray:
    r = np.asarray(risk, dtype=float).reshape(-1)
    if len(r) != n:
        raise ValueError(f"risk has {len(r)} entries but there are {n} test samples")
    if not np.isfinite(r).all():
        raise ValueError("risk contains NaN or inf")
    return r


def harrell_c(time, event, risk) -> float:
    """Harrell's C-index, ``risk`` higher = earlier event.

    Raises ValueError when there is no event or no comparable pair (e.g. all times tied).
    """
    t, e = _arrays(time, event)
    c = float(concordance_index_censored(e, t, _risk(risk, len(t)))[0])
    if np.isnan(c):
        raise ValueError("no comparable pair (every event time is tied with all later times)")
    return c


def censoring_support(train_time, train_event) -> float:
    """Largest training time at which the censoring survival G(t) is still > 0.

    IPCW weights 1/G(t) are finite strictly inside this bound.
    """
    t, e = _arrays(train_time, train_event, name="train_")
    if (~e).sum() == 0:
        return float(t.max())
    uniq, g = kaplan_meier_estimator(e, t, reverse=True)
    positive = uniq[g > 0]
    return float(positive.max()) if len(positive) else float(uniq.min())


def uno_c(train_time, train_event, test_time, test_event, risk, tau: float | None = None) -> float:
    """Uno's IPCW C-index (``concordance_index_ipcw``), truncated at ``tau``.

    Args:
        tau: truncation time; must lie inside the training follow-up. Default: the largest
            training time at which the censoring distribution is still positive.
    """
    tt, te = _arrays(train_time, train_event, name="train_")
    st, se = _arrays(test_time, test_event, name="test_")
    r = _risk(risk, len(st))
    limit = censoring_support(tt, te)
    if tau is None:
        tau = limit
    elif tau > tt.max():
        raise ValueError(f"tau={tau} lies beyond the training follow-up (max {tt.max()}); choose tau <= {limit}")
    return float(concordance_index_ipcw(Surv.from_arrays(te, tt), Surv.from_arrays(se, st), r, tau=tau)[0])


def _truncate(st: np.ndarray, se: np.ndarray, tmax: float) -> tuple[np.ndarray, np.ndarray]:
    """Administratively censor test follow-up at ``tmax`` (exact for metrics evaluated below it)."""
    return np.minimum(st, tmax), se & (st <= tmax)


def _check_grid(grid, st: np.ndarray, limit: float) -> np.ndarray:
    g = np.asarray(grid, dtype=float).reshape(-1)
    if len(g) < 2:
        raise ValueError("grid needs at least 2 time points (see eval_grid)")
    if g.min() < st.min() or g.max() >= st.max() or g.max() >= limit:
        raise ValueError(
            f"grid [{g.min()}, {g.max()}] must lie in the test follow-up [{st.min()}, {st.max()}) and below the "
            f"training censoring support {limit}; build it with eval_grid()"
        )
    if (np.diff(g) <= 0).any():
        raise ValueError("grid must be strictly increasing")
    return g


def integrated_brier(train_time, train_event, test_time, test_event, surv_probs, grid) -> float:
    """Integrated Brier score of ``surv_probs`` ``[n, len(grid)]`` (S(t) per test patient) over ``grid``."""
    tt, te = _arrays(train_time, train_event, name="train_")
    st, se = _arrays(test_time, test_event, name="test_")
    limit = censoring_support(tt, te)
    g = _check_grid(grid, st, limit)
    s = np.asarray(surv_probs, dtype=float)
    if s.shape != (len(st), len(g)):
        raise ValueError(f"surv_probs must be [n_test, len(grid)] = {(len(st), len(g))}, got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("surv_probs contains NaN or inf")
    st, se = _truncate(st, se, limit)
    return float(integrated_brier_score(Surv.from_arrays(te, tt), Surv.from_arrays(se, st), s, g))


def td_auc(train_time, train_event, test_time, test_event, risk, grid) -> float:
    """Mean cumulative/dynamic AUC of ``risk`` over ``grid`` (``cumulative_dynamic_auc``'s ``mean_auc``)."""
    tt, te = _arrays(train_time, train_event, name="train_")
    st, se = _arrays(test_time, test_event, name="test_")
    r = _risk(risk, len(st))
    limit = censoring_support(tt, te)
    g = _check_grid(grid, st, limit)
    st, se = _truncate(st, se, limit)
    # sksurv divides 0/0 at a time with no positive case; the value is then nan either way, the warning is log noise
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(cumulative_dynamic_auc(Surv.from_arrays(te, tt), Surv.from_arrays(se, st), r, g)[1])


def eval_grid(train_time, test_time, test_event, n: int = 20, train_event=None) -> np.ndarray:
    """Evaluation times strictly inside the test follow-up and the training range.

    From the 10th to the 90th percentile of the test times, capped below the training
    maximum (below the censoring support when ``train_event`` is given). Returns an
    empty array when that interval is empty (too few test patients).
    """
    tt = np.asarray(train_time, dtype=float).reshape(-1)
    st, _ = _arrays(test_time, test_event, name="test_")
    limit = censoring_support(tt, train_event) if train_event is not None else float(tt.max())
    lo = float(np.percentile(st, 10))
    hi = min(float(np.percentile(st, 90)), np.nextafter(limit, -np.inf), np.nextafter(st.max(), -np.inf))
    lo = max(lo, float(st.min()))
    if not hi > lo:
        return np.empty(0)
    return np.unique(np.linspace(lo, hi, n))


def step_survival(S_bins, edges, grid) -> np.ndarray:
    """Discrete-time survival ``[n, K]`` -> step function on ``grid`` ``[n, len(grid)]``.

    ``S_bins[:, k]`` = P(T >= edges[k+1]). For ``t`` in bin ``k`` (``[edges[k], edges[k+1])``),
    S(t) = P(T >= edges[k]) = ``S_bins[:, k-1]`` (1 for the first bin): the value at the
    last bin edge not after ``t``. Times past the last edge take ``S_bins[:, -1]``.
    """
    s = np.asarray(S_bins, dtype=float)
    ed = np.asarray(edges, dtype=float).reshape(-1)
    if s.ndim != 2 or s.shape[1] != len(ed) - 1:
        raise ValueError(f"S_bins must be [n, K] with K = len(edges) - 1 = {len(ed) - 1}, got {s.shape}")
    padded = np.concatenate([np.ones((s.shape[0], 1)), s], axis=1)  # padded[:, j] = S at edges[j]
    idx = np.clip(np.searchsorted(ed, np.asarray(grid, dtype=float), side="right") - 1, 0, s.shape[1])
    return padded[:, idx]


def survival_metrics(
    train_time,
    train_event,
    test_time,
    test_event,
    risk,
    surv_probs=None,
    grid=None,
    S_bins=None,
    edges=None,
) -> dict[str, float]:
    """All four metrics; a metric that cannot be computed is NaN, with the reason logged.

    Args:
        risk: ``[n_test]`` (higher = worse).
        surv_probs: ``[n_test, len(grid)]`` survival on ``grid`` (pass ``grid`` with it).
        grid: evaluation times; default :func:`eval_grid` (with ``train_event``).
        S_bins, edges: alternatively, discrete-time survival ``[n_test, K]`` and its bin
            edges; turned into ``surv_probs`` on the grid by :func:`step_survival`.
            Without ``surv_probs`` or ``S_bins`` the IBS is NaN.

    Returns:
        ``{"c_index", "c_index_ipcw", "ibs", "td_auc"}``.
    """
    out = {"c_index": np.nan, "c_index_ipcw": np.nan, "ibs": np.nan, "td_auc": np.nan}

    def attempt(key: str, fn) -> None:
        try:
            out[key] = fn()
        except Exception as exc:  # a metric must never take the evaluation down
            log.warning("metric %s is NaN: %s", key, exc)

    attempt("c_index", lambda: harrell_c(test_time, test_event, risk))
    attempt("c_index_ipcw", lambda: uno_c(train_time, train_event, test_time, test_event, risk))
    if grid is None:
        try:
            grid = eval_grid(train_time, test_time, test_event, train_event=train_event)
        except Exception as exc:
            log.warning("no evaluation grid (ibs, td_auc are NaN): %s", exc)
            return out
    if surv_probs is None and S_bins is not None and edges is not None:
        surv_probs = step_survival(S_bins, edges, grid)
    if surv_probs is None:
        log.warning("metric ibs is NaN: no survival probabilities given")
    else:
        attempt("ibs", lambda: integrated_brier(train_time, train_event, test_time, test_event, surv_probs, grid))
    attempt("td_auc", lambda: td_auc(train_time, train_event, test_time, test_event, risk, grid))
    return out
