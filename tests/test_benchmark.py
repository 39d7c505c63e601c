"""The TCGA benchmark: a smoke run on real BLCA data (1 epoch, tiny models) and the results maths."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import SHARED_DATA
from kemm.benchmark import BenchmarkError, load_cohort_specs, paired_tests, published_folds, run_benchmark

EXP = Path(__file__).resolve().parents[1] / "experiments" / "tcga"
RAW = SHARED_DATA / "raw"


def test_every_cohort_config_parses():
    from kemm.benchmark import _experiment_configs

    bench, specs = load_cohort_specs(EXP)
    cohorts = {s["bench"]["cohort"] for s in specs}
    assert {"blca", "gbmlgg", "luad", "lusc", "ucec", "hnsc", "coadread", "lihc"} <= cohorts
    for s in specs:
        runs = _experiment_configs(s, {"pbk": "p", "llm": "l", "rules": "r"}, bench, Path("/data"), Path("/kc"), Path("/out"), [])
        kinds = dict(runs)
        assert kinds["llm"].knowledge.report == "l" and kinds["rules"].knowledge.report == "r"
        assert [m.key for m in kinds["rules"].models] == ["kemm_rules", "coxph_rules"]
        assert kinds["llm"].train.epochs == 20 and kinds["llm"].data.splits_dir.startswith("/data/PORPOISE/splits")


def test_unknown_cohort_is_an_error():
    with pytest.raises(BenchmarkError, match="no config for cohort"):
        load_cohort_specs(EXP, ["nope"])


def test_paired_tests_on_known_differences():
    rows = []
    for c, delta in (("a", 0.02), ("b", 0.04)):
        for k in range(5):
            base = 0.6 + 0.01 * k
            rows += [{"cohort": c, "model": "kemm", "fold": k, "c_index": base + delta + 0.001 * k},
                     {"cohort": c, "model": "kemm_noknow", "fold": k, "c_index": base}]
    t = paired_tests(pd.DataFrame(rows), "kemm", "kemm_noknow").set_index("cohort")
    assert t.loc["a", "mean_diff"] == pytest.approx(0.022) and t.loc["a", "wins"] == 5
    assert t.loc["ALL (pooled folds)", "n_folds"] == 10
    assert t.loc["ALL (pooled folds)", "p_wilcoxon"] == pytest.approx(0.001953125)  # exact two-sided, n=10, all > 0


@pytest.mark.skipif(not (SHARED_DATA / "derived" / "MCAT").is_dir(), reason=f"real data absent: {SHARED_DATA}/derived/MCAT")
def test_published_rows_match_the_derived_file():
    p = published_folds(SHARED_DATA / "derived", ["blca"])
    mcat = p[p.model == "published: MCAT (WSI+genomics)"].sort_values("fold")["c_index"].to_numpy()
    assert len(mcat) == 5 and np.mean(mcat) == pytest.approx(0.6243, abs=1e-3)


@pytest.mark.slow
@pytest.mark.skipif(not (RAW / "PORPOISE").is_dir(), reason=f"real data absent: {RAW}")
def test_smoke_benchmark_on_blca(tmp_path):
    out = run_benchmark(
        EXP, RAW, out_dir=tmp_path, cache_dir=tmp_path / "kc", cohorts=["blca"],
        overrides=["train.epochs=1", "models=[{name: kemm, hparams: {dim: 16}}, {name: kemm_noknow, hparams: {dim: 16}}, {name: coxph}]"],
    )
    md = (out / "RESULTS.md").read_text()
    for row in ("| kemm |", "| kemm_noknow |", "| coxph |", "| kemm_rules |", "| coxph_rules |", "published: MCAT"):
        assert row in md
    assert "last epoch" in md and "373 in total" in md
    folds = pd.read_csv(out / "folds.csv")
    ours = folds[folds.experiment != "published"]
    assert len(ours) == 5 * 5 and ours["c_index"].between(0, 1).all()


def test_paired_tests_skip_folds_with_undefined_c_index():
    rows = []
    for k in range(5):
        rows += [{"cohort": "a", "model": "kemm", "fold": k, "c_index": 0.7 + 0.01 * k if k != 2 else None},
                 {"cohort": "a", "model": "kemm_noknow", "fold": k, "c_index": 0.6 + 0.02 * k}]
    t = paired_tests(pd.DataFrame(rows), "kemm", "kemm_noknow").set_index("cohort")
    assert t.loc["a", "n_folds"] == 4 and np.isfinite(t.loc["a", "p_paired_t"])
    assert t.loc["a", "mean_diff"] == pytest.approx(np.mean([0.1, 0.09, 0.07, 0.06]))
