"""Benchmark figures: a forest plot of paired differences, and every model's C-index per cohort.

Imports: matplotlib (Agg), numpy, pandas.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402


def forest_plot(tests: pd.DataFrame, pair: tuple[str, str], path: Path) -> None:
    """Mean paired ΔC per cohort with a 95% t-interval over its folds; the pooled row at the bottom."""
    t = tests.reset_index(drop=True)
    n = len(t)
    fig, ax = plt.subplots(figsize=(7, 0.45 * n + 1.6))
    for i, r in t.iterrows():
        y = n - 1 - i
        half = stats.t.ppf(0.975, r.n_folds - 1) * r.sd_diff / np.sqrt(r.n_folds) if r.n_folds > 1 else 0.0
        pooled = str(r.cohort).startswith("ALL")
        ax.errorbar(r.mean_diff, y, xerr=half, fmt="D" if pooled else "o", color="black" if pooled else "tab:blue",
                    capsize=3, ms=7 if pooled else 5)
        ax.text(1.02, y, f"{r.mean_diff:+.3f}  ({r.wins}/{r.n_folds} folds)", transform=ax.get_yaxis_transform(),
                va="center", fontsize=8)
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(range(n))
    ax.set_yticklabels([str(c).upper() if not str(c).startswith("ALL") else "pooled (40 folds)" for c in t.cohort[::-1]])
    ax.set_xlabel(f"C-index difference: {pair[0]} − {pair[1]} (mean over folds, 95% CI)")
    ax.set_title(f"{pair[0]} vs {pair[1]}, paired by fold")
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def model_chart(allf: pd.DataFrame, cohorts: list[str], path: Path, highlight: tuple[str, ...] = ()) -> None:
    """Mean C-index of every model per cohort: ``highlight`` rows (the first pair) as large dots, other
    rows as small dots in distinct colours, CoxPH baselines as grey squares, published rows as black marks."""
    piv = allf.groupby(["model", "cohort"])["c_index"].mean().unstack().reindex(columns=cohorts)
    models = list(piv.index)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(cohorts) + 3), 6))
    xs = np.arange(len(cohorts))
    palette = plt.get_cmap("tab20").colors
    own = [m for m in models if not m.startswith(("published", "coxph"))]
    styles = []
    for m in models:
        if m.startswith("published"):
            k = sum(1 for x in models[: models.index(m)] if x.startswith("published"))
            styles.append(dict(marker="*XP"[k % 3], ms=10, color="black"))
        elif m.startswith("coxph"):
            styles.append(dict(marker="s", ms=6, color="tab:gray"))
        else:
            styles.append(dict(marker="o" if m in highlight else ".", ms=8 if m in highlight else 7,
                               color=palette[own.index(m) % len(palette)]))
    width = 0.8 / max(len(models), 1)
    for j, (m, st) in enumerate(zip(models, styles)):
        kw = {k: v for k, v in st.items() if v is not None}
        ax.plot(xs - 0.4 + (j + 0.5) * width, piv.loc[m].to_numpy(float), ls="none", label=m, **kw)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(xs)
    ax.set_xticklabels([c.upper() for c in cohorts])
    ax.set_ylabel("C-index (mean over 5 folds)")
    ax.set_title("Every model per cohort (grey squares: CoxPH baselines; black marks: published MCAT results; large dots: the first pair)")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
