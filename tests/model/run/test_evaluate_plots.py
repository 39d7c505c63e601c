"""evaluate.py (metrics from fold records, tables, summaries) and plots.py (KM figure) directly."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from kemm.model.run.config import parse_config
from kemm.model.run.evaluate import collect_metrics, load_run, results_table, summarize_run, to_markdown
from kemm.model.run.plots import km_figure, km_risk_groups
from kemm.model.run.rundir import RunDir


def _preds(n: int = 80, seed: int = 0, model: str = "m", k: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time = rng.exponential(20 * np.exp(-risk))
    return pd.DataFrame({"case_id": [f"c{k}-{i}" for i in range(n)], "fold": k, "model": model, "risk": risk,
                         "train_median_risk": 0.0, "time": time, "event": (rng.uniform(size=n) < 0.8).astype(int)})


def test_km_figure_has_two_curves_and_png_is_written(tmp_path) -> None:
    fig, info = km_figure(_preds(), "t")
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines() if line.get_label().endswith(")")]
    assert labels == [f"low risk (n={info['n_low']})", f"high risk (n={info['n_high']})"]
    assert info["n_low"] + info["n_high"] == 80 and 0 <= info["logrank_p"] <= 1
    plt.close(fig)
    out = km_risk_groups(_preds(), tmp_path / "km.png")
    png = (tmp_path / "km.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and out["path"] == str(tmp_path / "km.png")
    assert not list(tmp_path.glob(".*.tmp"))


def test_km_with_one_group_has_no_logrank() -> None:
    p = _preds()
    p["train_median_risk"] = 99.0  # everyone is low risk
    fig, info = km_figure(p)
    assert info["n_high"] == 0 and math.isnan(info["logrank_p"])
    plt.close(fig)


def _write_fold(run: RunDir, model: str, k: int, c: float | None) -> None:
    f = run.fold(model, k)
    f.write_predictions(_preds(model=model, k=k, seed=k))
    f.write_metrics({"model": model, "fold": k, "n_train": 10, "n_val": 5, "train_median_risk": 0.0, "seconds": 1.0,
                     "c_index": c, "c_index_ipcw": c, "ibs": 0.2, "td_auc": None})


def test_collect_metrics_mean_std_skip_missing_and_order(tmp_path) -> None:
    run = RunDir(tmp_path)
    for k, c in [(0, 0.6), (1, 0.7), (2, None), (10, 0.8)]:
        _write_fold(run, "a", k, c)
    m = collect_metrics(tmp_path, ["a", "absent"])
    assert list(m) == ["a"] and m["a"]["n_folds"] == 4
    assert [r["fold"] for r in m["a"]["folds"]] == [0, 1, 2, 10]  # numeric fold order, not fold_10 < fold_2
    assert m["a"]["mean"]["c_index"] == pytest.approx(0.7) and m["a"]["std"]["c_index"] == pytest.approx(0.1)
    assert math.isnan(m["a"]["mean"]["td_auc"])
    table = results_table(m)
    assert table.loc[0, "C-index"] == "0.700 ± 0.100" and table.loc[0, "td-AUC"] == "n/a"
    assert to_markdown(table).splitlines()[2] == "| a | 4 | 0.700 ± 0.100 | 0.700 ± 0.100 | 0.200 ± 0.000 | n/a |"


def test_summarize_run_writes_every_artifact_and_keeps_earlier_models(tmp_path) -> None:
    cfg = parse_config({"name": "s", "output_dir": str(tmp_path), "data": {"cohort": "x.csv"}, "models": [{"name": "kemm"}]})
    run = RunDir(tmp_path)
    run.write_text(run.config_path, "name: s\noutput_dir: " + str(tmp_path) + "\ndata: {cohort: x.csv}\nmodels: [{name: kemm}]\n")
    for k in range(2):
        _write_fold(run, "kemm", k, 0.6 + 0.1 * k)
        _write_fold(run, "snn", k, 0.55)  # from an earlier ablation in the same run dir
    s = summarize_run(tmp_path, cfg)
    assert set(s["metrics"]) == {"kemm", "snn"} and s["main"] == "kemm"
    for p in (run.metrics_path, run.results_csv, run.results_md, run.predictions_path, run.km_json, run.km_png("kemm")):
        assert p.is_file(), p
    assert len(pd.read_csv(run.predictions_path)) == 4 * 80
    assert set(run.read_km()) == {"kemm", "snn"}
    cfg2, metrics = load_run(tmp_path)
    assert cfg2.name == "s" and list(metrics) == ["kemm"]


def test_load_run_of_a_non_run_dir(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        load_run(tmp_path)


def test_km_legend_title_names_the_knowledge() -> None:
    fig, _ = km_figure(_preds(), "run: kemm", legend_title="kemm @ report blca-rules; pbk pbk-curated")
    legend = fig.axes[0].get_legend()
    assert legend.get_title().get_text() == "kemm @ report blca-rules; pbk pbk-curated"
    assert all("@" not in t.get_text() for t in legend.get_texts())  # curve labels stay short
    fig.clf()
