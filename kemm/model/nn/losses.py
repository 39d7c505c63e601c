"""Survival losses and the discrete-time label helpers they need.

Plain functions with an explicit ``reduction``. Discrete-time conventions follow
MCAT/PORPOISE: ``hazards = sigmoid(logits)`` per bin, ``S_k = prod_{j<=k} (1 - h_j)`` is
the probability of surviving past bin ``k``, and ``censorship = 1`` means censored.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

_REDUCTIONS = ("mean", "sum", "none")


# -- label helpers (numpy, fitted on the training fold) --------------------------------
def _as_1d(name: str, x) -> np.ndarray:
    a = np.asarray(x, dtype=float).reshape(-1)
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN at positions {np.flatnonzero(np.isnan(a))[:10].tolist()}")
    return a


def make_bins(times, events, n_bins: int = 4, eps: float = 1e-6) -> np.ndarray:
    """Bin edges from quantiles of the UNCENSORED training times (MCAT's ``q_bins``).

    Args:
        times: follow-up times ``[n]`` (>= 0) of the training fold.
        events: ``[n]``, 1/True = event observed (NOT censorship).
        n_bins: number of bins.

    Returns:
        ``edges`` ``[n_bins + 1]``, strictly increasing, ``edges[0] = 0`` and
        ``edges[-1] = max(times) + eps`` so every training time falls in a bin (bins are
        ``[edges[k], edges[k+1])``; :func:`discretize` also clips later times into the last bin).
    """
    t, e = _as_1d("times", times), _as_1d("events", events)
    if len(t) != len(e):
        raise ValueError(f"times has {len(t)} entries but events has {len(e)}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if (t < 0).any() or not np.isfinite(t).all():
        raise ValueError("times must be finite and >= 0")
    unc = t[e > 0]
    if len(unc) == 0:
        raise ValueError("make_bins: all training samples are censored; quantile bins need >= 1 event")
    edges = np.quantile(unc, np.linspace(0.0, 1.0, n_bins + 1))
    edges[0], edges[-1] = 0.0, max(t.max(), edges[-1]) + eps
    # Tied quantiles (few or repeated event times) would give empty-width bins; nudge them
    # apart rather than change n_bins, which the model's output width depends on.
    if (np.diff(edges) <= 0).any():
        warnings.warn(
            f"make_bins: tied quantiles of uncensored times {edges.tolist()}; some bins will be (nearly) empty. "
            "Consider fewer bins.",
            stacklevel=2,
        )
        for k in range(1, n_bins + 1):
            edges[k] = max(edges[k], np.nextafter(edges[k - 1], np.inf) + eps * 1e-3)
    return edges


def discretize(times, edges) -> np.ndarray:
    """Bin index of each time, ``[n]`` int64 in ``[0, n_bins - 1]``; bins are ``[edges[k], edges[k+1])``.

    Times beyond the last edge (a test fold can outlive the training fold) go to the last bin.
    """
    t, ed = _as_1d("times", times), np.asarray(edges, dtype=float)
    if ed.ndim != 1 or len(ed) < 2 or (np.diff(ed) <= 0).any():
        raise ValueError(f"edges must be a strictly increasing 1-D array of >= 2 values, got {ed.tolist()}")
    return np.clip(np.searchsorted(ed, t, side="right") - 1, 0, len(ed) - 2).astype(np.int64)


# -- tensor checks ---------------------------------------------------------------------
def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_finite(name: str, x: torch.Tensor) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    return x.sum() if reduction == "sum" else x


# -- discrete-time survival ------------------------------------------------------------
def hazards_to_survival(logits: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, K]`` -> survival ``S`` ``[B, K]``, ``S[:, k] = P(T beyond bin k)``."""
    return torch.cumprod(1.0 - torch.sigmoid(logits), dim=1)


def risk_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Risk ``[B]`` = ``-sum_k S_k`` (higher = worse; MCAT's risk score)."""
    return -hazards_to_survival(logits).sum(dim=1)


def nll_surv_loss(
    logits: torch.Tensor,
    label: torch.Tensor,
    censorship: torch.Tensor,
    alpha: float = 0.0,
    eps: float = 1e-7,
    reduction: str = "mean",
) -> torch.Tensor:
    """Discrete-time survival negative log-likelihood (MCAT/PORPOISE ``nll_loss``).

    Per patient with bin ``y`` and ``S_{-1} = 1``:
    uncensored ``-log S_{y-1} - log h_y``; censored ``-log S_y``. The result is
    ``(1 - alpha) * (censored + uncensored) + alpha * uncensored``.

    Args:
        logits: ``[B, K]`` hazard logits.
        label: ``[B]`` int bin index in ``[0, K-1]``.
        censorship: ``[B]``, 1 = censored, 0 = event.
        alpha: extra weight on the uncensored term (MCAT uses 0.0 to 0.4).
        eps: clamp inside the logs.
        reduction: ``"mean" | "sum" | "none"`` (``"none"`` -> ``[B]``).
    """
    _check_reduction(reduction)
    if logits.ndim != 2:
        raise ValueError(f"logits must be [B, K], got shape {tuple(logits.shape)}")
    b, k = logits.shape
    label, c = label.reshape(-1), censorship.reshape(-1)
    if len(label) != b or len(c) != b:
        raise ValueError(f"length mismatch: logits has {b} rows, label {len(label)}, censorship {len(c)}")
    _check_finite("logits", logits)
    if label.is_floating_point():
        if not torch.isfinite(label).all() or (label != label.round()).any():
            raise ValueError("label must hold integer bin indices")
    label = label.long()
    if b and (label.min() < 0 or label.max() >= k):
        raise ValueError(f"label must lie in [0, {k - 1}] (n_bins={k}), got range [{int(label.min())}, {int(label.max())}]")
    c = c.to(logits.dtype)
    _check_finite("censorship", c)
    hazards = torch.sigmoid(logits)
    s = torch.cumprod(1.0 - hazards, dim=1)
    s_pad = torch.cat([torch.ones_like(s[:, :1]), s], dim=1)  # [B, K+1], s_pad[:, k] = S_{k-1}
    y = label[:, None]
    uncensored = -(1.0 - c) * (
        torch.log(torch.gather(s_pad, 1, y).clamp(min=eps)).squeeze(1)
        + torch.log(torch.gather(hazards, 1, y).clamp(min=eps)).squeeze(1)
    )
    censored = -c * torch.log(torch.gather(s_pad, 1, y + 1).clamp(min=eps)).squeeze(1)
    loss = (1.0 - alpha) * (censored + uncensored) + alpha * uncensored
    return _reduce(loss, reduction)


def cox_ph_loss(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Negative Cox partial log-likelihood, Breslow ties.

    For each event ``i``: ``-(r_i - log sum_{j: t_j >= t_i} exp(r_j))``; censored patients
    contribute only through risk sets.

    Args:
        risk: ``[B]`` log-risk (higher = worse).
        time: ``[B]`` follow-up times.
        event: ``[B]``, 1 = event.
        reduction: ``"mean"`` (over events), ``"sum"``, or ``"none"`` (``[B]``, 0 for censored).
            With no event in the batch, ``"mean"`` returns 0 (with a warning) and keeps the graph.
    """
    _check_reduction(reduction)
    risk, time, event = risk.reshape(-1), time.reshape(-1), event.reshape(-1)
    if not len(risk) == len(time) == len(event):
        raise ValueError(f"length mismatch: risk {len(risk)}, time {len(time)}, event {len(event)}")
    _check_finite("risk", risk)
    _check_finite("time", time.to(torch.float64))
    ev = event.to(risk.dtype)
    at_risk = time[None, :] >= time[:, None]  # [B, B]: row i's risk set
    log_den = torch.logsumexp(risk[None, :].expand(len(risk), -1).masked_fill(~at_risk, float("-inf")), dim=1)
    per = -(risk - log_den) * ev
    if reduction == "mean":
        n_ev = ev.sum()
        if n_ev == 0:
            warnings.warn("cox_ph_loss: no event in the batch; loss is 0", stacklevel=2)
            return risk.sum() * 0.0
        return per.sum() / n_ev
    return _reduce(per, reduction)
