"""Kaplan-Meier plot of predicted risk groups (lifelines + matplotlib, Agg backend).

Patients are split at the MEDIAN RISK OF THEIR TRAINING FOLD (a cut-off the
held-out patients did not influence), pooled over folds; the log-rank p-value
compares the two groups; at-risk counts are printed under the axis.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from kemm._io import atomic_path  # noqa: E402


def km_risk_groups(preds: pd.DataFrame, out_path: Path | str, title: str = "", legend_title: str = "") -> dict:
    """Plot KM curves of ``risk_group`` (high/low) from out-of-fold predictions to a PNG.

    Args:
        preds: columns ``time``, ``event`` (1 = event), ``risk``, ``train_median_risk``.
        out_path: PNG path (written atomically).

    Returns:
        ``{"path", "logrank_p", "n_low", "n_high"}``.
    """
    fig, info = km_figure(preds, title, legend_title)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return {"path": str(out_path), **info}


def km_figure(preds: pd.DataFrame, title: str = "", legend_title: str = "") -> tuple[plt.Figure, dict]:
    """The KM figure of :func:`km_risk_groups` (one curve per non-empty risk group) and
    ``{"logrank_p", "n_low", "n_high"}``; the caller closes the figure. ``legend_title`` heads the
    legend (e.g. the model and its knowledge sources, so two runs' figures cannot be confused);
    curve labels stay short because the at-risk table under the axis repeats them."""
    from lifelines import KaplanMeierFitter  # lazy: lifelines adds ~1 s to import; only plotting needs it
    from lifelines.plotting import add_at_risk_counts  # lazy: as above
    from lifelines.statistics import logrank_test  # lazy: as above

    df = preds.dropna(subset=["time", "event", "risk"])
    high = df["risk"].to_numpy() > df["train_median_risk"].to_numpy()
    groups = {"low risk": df[~high], "high risk": df[high]}
    fig, ax = plt.subplots(figsize=(7.0, 5.6))
    fitters = []
    for (label, g), color in zip(groups.items(), ("tab:blue", "tab:red")):
        if len(g) == 0:
            continue
        km = KaplanMeierFitter(label=f"{label} (n={len(g)})")
        km.fit(g["time"], g["event"])
        km.plot_survival_function(ax=ax, ci_show=True, color=color, show_censors=True, censor_styles={"ms": 4})
        fitters.append(km)
    p = float("nan")
    if len(groups["low risk"]) and len(groups["high risk"]):
        lr = logrank_test(
            groups["low risk"]["time"], groups["high risk"]["time"], groups["low risk"]["event"], groups["high risk"]["event"]
        )
        p = float(lr.p_value)
    ax.set_xlabel("time (months)")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ptxt = "n/a" if not np.isfinite(p) else (f"{p:.2e}" if p < 1e-3 else f"{p:.3f}")
    ax.set_title(
        f"{title}\nrisk groups split at the training-fold median risk, pooled out-of-fold\nlog-rank p = {ptxt}",
        fontsize=9,
    )
    if fitters and legend_title:
        ax.legend(title=legend_title, fontsize=8, title_fontsize=8, loc="lower left")
    if fitters:
        add_at_risk_counts(*fitters, ax=ax, rows_to_show=["At risk"])
    fig.tight_layout()
    return fig, {"logrank_p": p, "n_low": int((~high).sum()), "n_high": int(high.sum())}
