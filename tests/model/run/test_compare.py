"""`kemm compare`: runs side by side, paired deltas, one KM figure per run naming its knowledge (issue 14)."""
from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from kemm.cli import app
from kemm.compare import compare_runs
from kemm.model.data.synthetic import make_synthetic_cohort
from kemm.model.errors import RunError
from kemm.model.run.config import knowledge_label, parse_config
from kemm.model.run.train import run_experiment


def _cfg(syn, out, epochs, split_seed=0, knowledge=None):
    return parse_config({
        "name": "t", "output_dir": str(out),
        "data": {"cohort": str(syn.cohort_csv), "n_folds": 3, "split_seed": split_seed,
                 "genomics": {"groups": "signatures", "signatures": str(syn.signatures_csv)}, "clinical": ["age", "sex"]},
        "knowledge": knowledge or {},
        "models": [{"name": "snn", "hparams": {"dim": 32}}, {"name": "coxph"}],
        "train": {"epochs": epochs, "lr": 1e-3, "batch_size": 16, "progress": False},
    })


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cmp")
    syn = make_synthetic_cohort(tmp / "syn", n_patients=120, seed=0, patches=(5, 10), wsi_dim=8)
    a = run_experiment(_cfg(syn, tmp / "run-a", 1))
    b = run_experiment(_cfg(syn, tmp / "run-b", 3))
    c = run_experiment(_cfg(syn, tmp / "run-c", 1, split_seed=1))
    return a, b, c


def test_compare_two_runs(runs, tmp_path):
    a, b, _ = runs
    md = compare_runs([a, b], tmp_path / "cmp")
    text = md.read_text()
    assert "| model | fold | run-a | run-b |" in text
    table = pd.read_csv(tmp_path / "cmp" / "compare_folds.csv")
    assert set(table["model"]) == {"snn", "coxph"} and list(table["fold"].astype(str)[:4]) == ["0", "1", "2", "mean"]
    # coxph does not depend on epochs: identical folds, delta exactly 0
    snn = table[(table.model == "snn") & (table.fold != "mean")]
    assert "run-b − run-a | snn |" in text and "paired t p" in text
    d = (snn["run-b"] - snn["run-a"]).mean()
    assert f"{d:+.3f}" in text
    for run in ("run-a", "run-b"):
        png = tmp_path / "cmp" / f"km_{run}.png"
        assert png.is_file() and png.stat().st_size > 10_000 and f"![{run}](km_{run}.png)" in text


def test_different_folds_are_not_paired(runs, tmp_path):
    a, _, c = runs
    text = compare_runs([a, c], tmp_path / "cmp").read_text()
    assert "different folds" in text and "paired t p" not in text


def test_cli_compare_and_errors(runs, tmp_path):
    a, b, _ = runs
    r = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "o"), "--model", "coxph"])
    assert r.exit_code == 0, r.output
    assert "# kemm compare" in r.output and (tmp_path / "o" / "compare.md").is_file()
    r = CliRunner().invoke(app, ["compare", str(a), str(tmp_path / "nope"), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "not a run directory" in r.output
    with pytest.raises(RunError, match="at least two"):
        compare_runs([a], tmp_path / "o3")


def test_knowledge_label(tmp_path):
    cfg = parse_config({"data": {"cohort": "c.csv"}, "models": [{"name": "kemm"}, {"name": "kemm_noknow"}],
                        "knowledge": {"report": ["blca-rules-fields"], "pbk": "pbk-curated"}})
    assert knowledge_label(cfg) == "report blca-rules-fields; pbk pbk-curated"
    assert knowledge_label(cfg, "kemm") == "report blca-rules-fields; pbk pbk-curated"
    assert knowledge_label(cfg, "kemm_noknow").startswith("none")
