"""`kemm demo` end to end (small), and the CLI commands on its run directory."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

import yaml

from kemm.cli import app
from kemm.knowledge import build_reports
from kemm.model.data.synthetic import make_synthetic_cohort
from kemm.pipelines import run_demo


@pytest.mark.slow
def test_demo_pipeline_and_cli(tmp_path):
    res = run_demo(tmp_path / "demo", n_patients=80, epochs=1, progress=False, log=lambda m: None)
    metrics = json.loads((res.run_dir / "metrics.json").read_text())
    assert set(metrics) == {"kemm", "kemm_noknow", "abmil", "snn", "mcat", "text", "coxph"}
    assert all(d["n_folds"] == 5 for d in metrics.values())
    assert res.km_plot is not None and res.km_plot.stat().st_size > 10_000
    # the knowledge came through the real path: rules backend + sentence encoder
    cov = json.loads((res.run_dir / "run.json").read_text())["coverage"]
    assert cov["report"] > 50 and cov["pbk"] == 80

    runner = CliRunner()
    r = runner.invoke(app, ["evaluate", str(res.run_dir)])
    assert r.exit_code == 0, r.output
    assert "kemm_noknow" in r.output and "C-index" in r.output
    out = tmp_path / "risks.csv"
    r = runner.invoke(app, ["predict", str(res.run_dir), "--cohort", str(tmp_path / "demo" / "data" / "cohort.csv"),
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert len(df) == 80 and df["model"].eq("kemm").all()


def test_cli_errors_name_the_key(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("data: {cohort: c.csv, cohrt: 1}\nmodels: [{name: kemm}]\n")
    r = CliRunner().invoke(app, ["train", str(p)])
    assert r.exit_code == 2 and "data.cohrt" in " ".join(r.output.split())  # rich wraps lines
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path)])
    assert r.exit_code == 2 and "not a run directory" in " ".join(r.output.split())


@pytest.mark.parametrize("built", [False, True], ids=["missing-source", "never-embedded"])
def test_train_with_unusable_knowledge_source_is_one_line_exit_2(tmp_path, built):
    syn = make_synthetic_cohort(tmp_path / "data", n_patients=30, seed=0, patches=(2, 4), wsi_dim=4)
    cache = tmp_path / "cache"
    if built:  # a source whose statements were never embedded
        build_reports(syn.reports_csv, "src", backend="rules", cache_dir=cache, cancer_type=syn.cancer_type)
    cfg = {"name": "k", "output_dir": str(tmp_path / "run"),
           "data": {"cohort": str(syn.cohort_csv), "genomics": {"groups": "none"}, "clinical": ["age"]},
           "knowledge": {"report": "src", "cache_dir": str(cache)}, "models": [{"name": "text"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml"), "--quiet"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "src" in lines[0], lines


def test_error_lines_keep_brackets(capsys):
    """An error naming an extra (kemm[encoders]) must print it, not eat it as rich markup."""
    import typer

    from kemm.cli import fail

    with pytest.raises(typer.Exit):
        fail("pip install 'kemm[encoders]'")
    assert "kemm[encoders]" in capsys.readouterr().err
