"""`kemm explain`: a patient's knowledge tokens with their pooling weights, out-of-fold, and a cohort summary."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from fakes import rules_knowledge
from kemm.cli import app
from kemm.model.data.synthetic import make_synthetic_cohort
from kemm.model.run.config import parse_config
from kemm.model.run.explain import cohort_summary, explain_all, explain_case, open_run
from kemm.model.run.train import run_experiment

HP = {"dim": 8, "dropout": 0.1}
SOURCES = {"report": ["rep", "rep-fields"], "pbk": "rep-grounded"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 3-fold run (1 epoch) on 60 synthetic patients: rules reports + field sentences + grounded PBK."""
    root = tmp_path_factory.mktemp("explain")
    syn = make_synthetic_cohort(root / "data", n_patients=60, seed=0, patches=(5, 12), wsi_dim=8)
    cache = root / "cache"
    rules_knowledge(syn, cache)
    cfg = parse_config({
        "name": "t", "output_dir": str(root / "run"),
        "data": {"cohort": str(syn.cohort_csv), "features_dir": str(syn.features_dir), "n_folds": 3,
                 "genomics": {"groups": "signatures", "signatures": str(syn.signatures_csv)},
                 "reports": [str(syn.reports_csv)]},
        "knowledge": {**SOURCES, "cache_dir": str(cache)},
        "models": [*({"name": m, "hparams": {} if m == "coxph" else HP} for m in ("kemm", "text", "kemm_noknow", "coxph")),
                   {"name": "kemm", "label": "kemm@lin", "hparams": HP, "train": {"linear_part": {"enabled": True}}}],
        "train": {"epochs": 1, "batch_size": 16, "progress": False},
    })
    return run_experiment(cfg), cache


def _oof(run_dir, model="kemm") -> pd.DataFrame:
    p = pd.read_csv(run_dir / "predictions.csv")
    return p[p["model"] == model].set_index("case_id")


def test_case_tokens_are_the_patients_statements_and_weights_sum_to_one(run):
    run_dir, cache = run
    ctx = open_run(run_dir)
    oof = _oof(run_dir)
    case = next(c for c in oof.index if ctx.data.report.get(c) is not None)
    e = explain_case(run_dir, case)
    assert e.fold == int(oof.loc[case, "fold"])  # the model that never saw the case
    assert e.risk == pytest.approx(float(oof.loc[case, "risk"]), abs=1e-4)  # same inputs as training rebuilt them
    w = np.array([t.weight for t in e.tokens])
    assert w.sum() == pytest.approx(1.0, abs=1e-5) and (w >= 0).all()
    rep = [t for t in e.tokens if t.source == "report"]
    pbk = [t for t in e.tokens if t.source == "pbk"]
    assert [t.text for t in rep] == ctx.data.report.statements[case]
    assert [t.kind for t in rep] == ctx.data.report.kinds_of(case)
    assert "statement" in {t.kind for t in rep} and any(t.kind.startswith("pT:") for t in rep)  # statements, fields
    assert e.pbk_key in (case, None) and [t.text for t in pbk] == (ctx.data.pbk.statements[case] if pbk else [])
    assert all(t.kind.startswith("pbk") for t in pbk)
    assert all(len(t.omic) == len(ctx.data.groups.names) for t in e.tokens)  # genomic-group attention per token
    assert all(sum(t.omic.values()) == pytest.approx(1.0, abs=1e-4) for t in e.tokens)


def test_linear_part_is_named_and_in_the_risk(run, tmp_path):
    """A model with train.linear_part: the weights are the network's, the risk is the model's (mixture)."""
    run_dir, _ = run
    oof = _oof(run_dir, "kemm@lin")
    case = oof.index[0]
    e = explain_case(run_dir, case, model="kemm@lin")
    assert e.linear_part == "mixture 0.5"
    assert e.risk == pytest.approx(float(oof.loc[case, "risk"]), abs=1e-4)
    assert sum(t.weight for t in e.tokens) == pytest.approx(1.0, abs=1e-5)
    plain = explain_case(run_dir, case)
    assert plain.linear_part == ""


def test_text_model_and_cohort_summary(run):
    run_dir, _ = run
    oof = _oof(run_dir, "text")
    case = oof.index[0]
    e = explain_case(run_dir, case, model="text")
    assert e.risk == pytest.approx(float(oof.loc[case, "risk"]), abs=1e-4)
    ctx = open_run(run_dir)
    expls = explain_all(ctx)
    assert sorted(x.case_id for x in expls) == sorted(_oof(run_dir).index)
    s = cohort_summary(expls)
    assert s["share"].sum() == pytest.approx(1.0, abs=1e-5)
    assert s["share"].is_monotonic_decreasing and {"report", "pbk"} == set(s["source"])


def test_cli_writes_table_csv_json_png(run, tmp_path):
    run_dir, _ = run
    case = _oof(run_dir).index[1]
    r = CliRunner().invoke(app, ["explain", str(run_dir), case, "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert case in r.output and "weight" in r.output
    df = pd.read_csv(tmp_path / f"{case}.csv")
    assert {"position", "source", "kind", "text", "weight"} <= set(df.columns)
    assert json.loads((tmp_path / f"{case}.json").read_text())["case_id"] == case
    with Image.open(tmp_path / f"{case}.png") as im:
        im.verify()
        assert im.format == "PNG" and im.size[0] > 500
    r = CliRunner().invoke(app, ["explain", str(run_dir), "--cohort"])
    assert r.exit_code == 0, r.output
    with Image.open(run_dir / "explain" / "cohort.png") as im:
        assert im.format == "PNG"
    assert len(pd.read_csv(run_dir / "explain" / "cohort.csv")) >= 3


@pytest.mark.parametrize("args, msg", [
    (["TCGA-NOPE-0000"], "case 'TCGA-NOPE-0000' is in no validation fold"),
    (["--model", "kemm_noknow", "@case"], "reads no knowledge tokens"),
    (["--model", "coxph", "@case"], "linear model without knowledge tokens"),
    (["--model", "abmil", "@case"], "no finished fold of model 'abmil'"),
    ([], "give either a CASE id or --cohort"),
])
def test_cli_errors_are_one_line_exit_2(run, args, msg):
    run_dir, _ = run
    case = str(_oof(run_dir).index[0])
    r = CliRunner().invoke(app, ["explain", str(run_dir), *[case if a == "@case" else a for a in args]])
    assert r.exit_code == 2, r.output
    assert msg in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_run_dir_that_is_not_a_run(tmp_path):
    r = CliRunner().invoke(app, ["explain", str(tmp_path), "X"])
    assert r.exit_code == 2 and "not a run directory" in r.output
