"""``kemm compare RUN_A RUN_B [...]``: the ablation view of several runs of one cohort.

Per model and fold, the C-index of every run side by side; for each later run, the paired
fold-wise difference to the first run (the reference) with a paired t-test per model and a
Wilcoxon test over all pooled (model, fold) pairs; one Kaplan–Meier figure per run whose title
and legend name the run's knowledge sources. Written as ``compare.md``, ``compare_folds.csv``
and ``km_<run>.png`` in ``--out``.

Deltas are paired only when the runs used the same folds (their ``splits/`` files agree);
otherwise the table says so and no test is made.

Imports: pandas, ``kemm._io``, ``kemm.model.run`` (run directories, plots), and
``kemm.benchmark.paired_tests`` (the benchmark's paired test, reused as is).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from kemm._io import atomic_path, atomic_write_text
from kemm.benchmark import paired_tests
from kemm.model.errors import RunError
from kemm.model.run.config import ExperimentConfig, knowledge_label
from kemm.model.run.evaluate import load_run
from kemm.model.run.plots import km_figure
from kemm.model.run.rundir import RunDir


@dataclass
class RunInfo:
    label: str  # the run's folder name (made unique)
    root: Path
    cfg: ExperimentConfig
    folds: pd.DataFrame  # model, fold, c_index

    @property
    def knowledge(self) -> str:
        return knowledge_label(self.cfg)


def read_runs(run_dirs: list[Path]) -> list[RunInfo]:
    """Config and per-fold C-index of each run; a folder that is not a finished run is an error naming it."""
    if len(run_dirs) < 2:
        raise RunError("kemm compare needs at least two run directories")
    out, seen = [], set()
    for d in run_dirs:
        try:
            cfg, metrics = load_run(d)
        except FileNotFoundError as e:
            raise RunError(str(e)) from None
        if not metrics:
            raise RunError(f"{d}: no finished fold yet")
        rows = [{"model": m, "fold": r["fold"], "c_index": r.get("c_index")}
                for m in metrics for r in RunDir(d).fold_records(m)]
        label = Path(d).resolve().name
        while label in seen:
            label += "'"
        seen.add(label)
        out.append(RunInfo(label, Path(d), cfg, pd.DataFrame(rows)))
    return out


def same_folds(runs: list[RunInfo]) -> bool:
    """True when every run has the same ``splits/splits_<k>.csv`` files, byte for byte."""
    def splits(r: RunInfo) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(RunDir(r.root).splits_dir.glob("splits_*.csv"))}
    first = splits(runs[0])
    return bool(first) and all(splits(r) == first for r in runs[1:])


def side_by_side(runs: list[RunInfo]) -> pd.DataFrame:
    """Rows (model, fold) plus a ``mean`` row per model; one C-index column per run."""
    frames = [r.folds.assign(run=r.label) for r in runs]
    allf = pd.concat(frames, ignore_index=True)
    wide = allf.pivot_table(index=["model", "fold"], columns="run", values="c_index", aggfunc="first")
    wide = wide.reindex(columns=[r.label for r in runs])
    means = wide.groupby(level="model").mean()
    means.index = pd.MultiIndex.from_tuples([(m, "mean") for m in means.index], names=["model", "fold"])
    wide.index = pd.MultiIndex.from_tuples([(m, str(f)) for m, f in wide.index], names=["model", "fold"])
    order = [m for r in runs for m in r.folds["model"].unique()]
    order = list(dict.fromkeys(order))
    both = pd.concat([wide, means]).reset_index()
    both["_m"] = both["model"].map({m: i for i, m in enumerate(order)})
    both["_f"] = both["fold"].map(lambda f: 1e9 if f == "mean" else int(f))
    return both.sort_values(["_m", "_f"]).drop(columns=["_m", "_f"]).reset_index(drop=True)


def deltas(runs: list[RunInfo]) -> pd.DataFrame:
    """Paired fold-wise differences run − reference (the first run) for every model both ran."""
    ref = runs[0]
    rows = []
    for r in runs[1:]:
        long = pd.concat([ref.folds.assign(run=ref.label), r.folds.assign(run=r.label)], ignore_index=True)
        # paired_tests pairs rows of one "cohort" by fold: here each model is a cohort, each run a model
        long = long.rename(columns={"model": "cohort"}).rename(columns={"run": "model"})
        t = paired_tests(long, r.label, ref.label)
        if not t.empty:
            rows.append(t.assign(run=r.label, reference=ref.label).rename(columns={"cohort": "model"}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def km_figures(runs: list[RunInfo], out_dir: Path, model: str | None) -> dict[str, Path]:
    """One KM figure per run (its main model, or ``model``); title and legend name the knowledge sources."""
    paths = {}
    for r in runs:
        m = model or r.cfg.main
        frames = RunDir(r.root).fold_predictions(m)
        if not frames:
            raise RunError(f"{r.root}: no predictions of model {m!r} (models: {sorted(r.folds['model'].unique())})")
        preds = pd.concat(frames, ignore_index=True)
        k = knowledge_label(r.cfg, m)
        fig, _ = km_figure(preds, f"{r.label}: {m}\nknowledge: {k}", legend_title=f"{m} @ {k}")
        path = out_dir / f"km_{r.label}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)
        paths[r.label] = path
    return paths


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "n/a" if v is None or not np.isfinite(v) else format(v, fmt)


def render(runs: list[RunInfo], table: pd.DataFrame, d: pd.DataFrame, paired: bool, km: dict[str, Path]) -> str:
    lines = ["# kemm compare", "", "| run | directory | knowledge |", "|---|---|---|"]
    lines += [f"| {r.label} | `{r.root}` | {r.knowledge} |" for r in runs]
    lines += ["", "## C-index per model and fold", "",
              "| model | fold | " + " | ".join(r.label for r in runs) + " |", "|---|---|" + "---:|" * len(runs)]
    for _, row in table.iterrows():
        cells = [_num(row[r.label]) for r in runs]
        if row["fold"] == "mean":
            cells = [f"**{c}**" for c in cells]
        lines.append(f"| {row['model']} | {row['fold']} | " + " | ".join(cells) + " |")
    lines += ["", f"## Paired differences to {runs[0].label} (same folds)", ""]
    if not paired:
        lines.append("The runs used different folds (their `splits/` files differ): no paired difference is computed.")
    elif d.empty:
        lines.append("No model has at least two folds in both runs.")
    else:
        lines += ["| run − reference | model | mean Δ C-index | sd | folds | run better | paired t p | Wilcoxon p |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for _, x in d.iterrows():
            lines.append(f"| {x['run']} − {x['reference']} | {x['model']} | {_num(x['mean_diff'], '+.3f')} | "
                         f"{_num(x['sd_diff'])} | {x['n_folds']} | {x['wins']} | {_num(x['p_paired_t'])} | "
                         f"{_num(x.get('p_wilcoxon'))} |")
        lines += ["", "Paired t-test over the folds of one model; the pooled row tests every (model, fold) pair "
                  "together (Wilcoxon signed-rank). Five folds give little power: read the per-fold columns too."]
    lines += ["", "## Kaplan–Meier of each run", ""]
    lines += [f"![{label}]({p.name})" for label, p in km.items()]
    return "\n".join(lines) + "\n"


def compare_runs(run_dirs: list[Path], out_dir: Path, model: str | None = None) -> Path:
    """Write ``compare.md``, ``compare_folds.csv`` and ``km_<run>.png`` to ``out_dir``; returns compare.md."""
    runs = read_runs(run_dirs)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = side_by_side(runs)
    paired = same_folds(runs)
    d = deltas(runs) if paired else pd.DataFrame()
    km = km_figures(runs, out_dir, model)
    with atomic_path(out_dir / "compare_folds.csv") as tmp:
        table.to_csv(tmp, index=False)
    md = out_dir / "compare.md"
    atomic_write_text(md, render(runs, table, d, paired, km))
    return md
