"""Run directories hold no pickle that kemm loads: CoxPH folds are JSON; a model.pkl is refused
by predict/evaluate/train-resume (a crafted one never runs), and only `kemm run upgrade` converts one."""
from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from kemm.cli import app
from kemm.model.data.synthetic import make_synthetic_cohort
from kemm.model.errors import RunError
from kemm.model.linear.coxph import CoxPHFoldModel
from kemm.model.run.config import parse_config
from kemm.model.run.predict import predict_run
from kemm.model.run.rundir import RunDir
from kemm.model.run.train import run_experiment


class _Boom:
    """Unpickling this writes ``path``: the proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _cfg(syn, out):
    return parse_config({
        "name": "cox", "output_dir": str(out),
        "data": {"cohort": str(syn.cohort_csv), "n_folds": 3, "genomics": {"groups": "none"}, "clinical": ["age", "sex"]},
        "models": [{"name": "coxph"}],
        "train": {"progress": False},
    })


@pytest.fixture(scope="module")
def cox_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cox")
    syn = make_synthetic_cohort(root / "data", n_patients=90, seed=1, patches=(4, 8), wsi_dim=8)
    return syn, run_experiment(_cfg(syn, root / "run"))


def test_coxph_folds_are_json_and_predict_matches_training(cox_run) -> None:
    syn, run_dir = cox_run
    run = RunDir(run_dir)
    folds = run.folds_of("coxph")
    assert [f.k for f in folds] == [0, 1, 2]
    assert all(f.json_path.is_file() and not f.pickle_path.exists() for f in folds)
    df = predict_run(run_dir, syn.cohort_csv)
    pooled = run.fold_predictions("coxph")
    for f, oof in zip(folds, pooled):  # out-of-fold risk written in training == risk of the reloaded fold model
        got = df.set_index("case_id").loc[oof["case_id"], f"risk_fold{f.k}"].to_numpy()
        np.testing.assert_allclose(got, oof["risk"].to_numpy(), rtol=1e-12)


def test_crafted_pickle_is_never_loaded(cox_run, tmp_path) -> None:
    syn, run_dir = cox_run
    evil = tmp_path / "run"
    shutil.copytree(run_dir, evil)
    marker = tmp_path / "pwned"
    fold = RunDir(evil).fold("coxph", 0)
    fold.json_path.unlink()
    fold.pickle_path.write_bytes(pickle.dumps({"model": _Boom(str(marker))}))

    with pytest.raises(RunError, match="run upgrade") as e:
        predict_run(evil, syn.cohort_csv)
    assert "\n" not in str(e.value) and f"`kemm run upgrade {evil}`" in str(e.value)
    res = CliRunner().invoke(app, ["predict", str(evil), "--cohort", str(syn.cohort_csv), "--out", str(tmp_path / "p.csv")])
    assert res.exit_code == 2 and "kemm run upgrade" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["evaluate", str(evil), "--no-folds"])
    assert res.exit_code == 0, res.output
    run_experiment(_cfg(syn, evil))  # resume: every fold is done, nothing is reloaded
    assert not marker.exists()
    pickle.loads(fold.pickle_path.read_bytes())  # the control: loading it does write the marker
    assert marker.exists()


def test_run_upgrade_converts_a_trusted_pickle(cox_run, tmp_path) -> None:
    syn, run_dir = cox_run
    old = tmp_path / "run"
    shutil.copytree(run_dir, old)
    before = predict_run(old, syn.cohort_csv)
    fold = RunDir(old).fold("coxph", 1)
    fm = CoxPHFoldModel.load(fold)
    fold.pickle_path.write_bytes(pickle.dumps({"model": fm.model, "clinical": ["age", "sex"], "edges": fm.edges}))
    fold.json_path.unlink()
    with pytest.raises(RunError, match="model.pkl"):
        predict_run(old, syn.cohort_csv)
    res = CliRunner().invoke(app, ["run", "upgrade", str(old)])
    assert res.exit_code == 0, res.output
    assert fold.json_path.is_file() and not fold.pickle_path.exists()
    after = predict_run(old, syn.cohort_csv)
    np.testing.assert_array_equal(after["risk"].to_numpy(), before["risk"].to_numpy())
