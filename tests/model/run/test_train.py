"""Cross-validated training on the synthetic cohort: signal is found, knowledge matters, runs resume."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from kemm.model.run.config import parse_config
from kemm.model.data.synthetic import make_synthetic_cohort, truth_knowledge
from kemm.model.errors import RunError
from kemm.model.run.train import run_experiment

HP = {"dim": 64, "dropout": 0.1}


def _cfg(syn, out, models, epochs=6, clinical=(), **train):
    return parse_config({
        "name": "t",
        "output_dir": str(out),
        "data": {"cohort": str(syn.cohort_csv), "features_dir": str(syn.features_dir), "n_folds": 3,
                 "genomics": {"groups": "signatures", "signatures": str(syn.signatures_csv)}, "clinical": ["age", "sex"], "model_clinical": list(clinical)},
        "models": [{"name": m, "hparams": {} if m == "coxph" else HP} for m in models],
        "train": {"epochs": epochs, "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 16, "progress": False, **train},
    })


@pytest.fixture(scope="module")
def syn_all(tmp_path_factory):
    return make_synthetic_cohort(tmp_path_factory.mktemp("all"), n_patients=240, seed=0, patches=(30, 80), wsi_dim=32)


@pytest.fixture(scope="module")
def syn_reports(tmp_path_factory):
    return make_synthetic_cohort(tmp_path_factory.mktemp("rep"), n_patients=240, seed=0, signal="reports",
                                 patches=(30, 80), wsi_dim=32)


def _means(run_dir):
    return {m: d["mean"]["c_index"] for m, d in json.loads((run_dir / "metrics.json").read_text()).items()}


@pytest.mark.slow
def test_kemm_finds_planted_signal(syn_all, tmp_path):
    rep, pbk = truth_knowledge(syn_all)
    run = run_experiment(_cfg(syn_all, tmp_path / "run", ["kemm"]), report=rep, pbk=pbk)
    assert _means(run)["kemm"] > 0.7
    for f in ("config.yaml", "run.json", "metrics.json", "results.md", "results.csv", "predictions.csv", "km_kemm.png"):
        assert (run / f).is_file(), f
    preds = pd.read_csv(run / "predictions.csv")
    assert {"case_id", "fold", "model", "risk", "surv_1", "edge_1", "time", "event"} <= set(preds.columns)
    assert preds["case_id"].is_unique and len(preds) == 240


@pytest.mark.slow
def test_knowledge_beats_no_knowledge_when_signal_is_only_in_reports(syn_reports, tmp_path):
    rep, pbk = truth_knowledge(syn_reports)
    run = run_experiment(_cfg(syn_reports, tmp_path / "run", ["kemm", "kemm_noknow"]), report=rep, pbk=pbk)
    c = _means(run)
    assert c["kemm"] > c["kemm_noknow"] + 0.1, c
    assert c["kemm_noknow"] < 0.62, c


def _interrupted_run(syn, out):
    """snn + coxph over 3 folds, stopped (KeyboardInterrupt) after fold 1 of coxph: folds 0-1 done."""
    cfg = _cfg(syn, out, ["snn", "coxph"], epochs=1)

    def boom(model, k, rec):
        if (model, k) == ("coxph", 1):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, on_fold_done=boom)
    return cfg


def test_resume_does_not_redo_finished_folds(syn_all, tmp_path):
    cfg = _interrupted_run(syn_all, tmp_path / "run")
    done = sorted(p.parent.name + "/" + p.parent.parent.name for p in (tmp_path / "run" / "folds").glob("*/*/metrics.json"))
    assert len(done) == 4  # folds 0 and 1 of both models
    started = []
    run_experiment(cfg, on_fold_start=lambda m, k: started.append((m, k)))
    assert started == [("snn", 2), ("coxph", 2)]
    assert all(d["n_folds"] == 3 for d in json.loads((tmp_path / "run" / "metrics.json").read_text()).values())


def test_resume_refuses_a_different_experiment(syn_all, tmp_path):
    run_experiment(_cfg(syn_all, tmp_path / "run", ["coxph"], epochs=1))
    with pytest.raises(RunError, match=r"different experiment \(train.epochs: 1 -> 2\)") as e:
        run_experiment(_cfg(syn_all, tmp_path / "run", ["coxph"], epochs=2, progress=True, num_threads=2))
    assert "progress" not in str(e.value) and "num_threads" not in str(e.value)


def test_display_settings_are_not_identity(syn_all, tmp_path):
    """--quiet / --progress and the thread count never make a run 'different' (issue 14)."""
    run_experiment(_cfg(syn_all, tmp_path / "run", ["coxph"], epochs=1))
    started = []
    run_experiment(_cfg(syn_all, tmp_path / "run", ["coxph"], epochs=1, progress=True, num_threads=2),
                   on_fold_start=lambda m, k: started.append((m, k)))
    assert started == []  # resumed: every fold was already done


def test_early_stopping_uses_inner_split_only(syn_all, tmp_path):
    cfg = _cfg(syn_all, tmp_path / "run", ["snn"], epochs=3, early_stopping={"enabled": True, "patience": 1})
    run = run_experiment(cfg)
    rec = json.loads((run / "folds" / "snn" / "fold_0" / "metrics.json").read_text())
    assert all("inner_c_index" in h for h in rec["history"])
    # the inner split is carved out of the training fold: the reported fold is untouched
    assert rec["n_val"] == len(pd.read_csv(run / "folds" / "snn" / "fold_0" / "predictions.csv"))


def test_predict_ensembles_folds(syn_all, tmp_path):
    from kemm.model.run.predict import predict_run

    rep, pbk = truth_knowledge(syn_all)
    run = run_experiment(_cfg(syn_all, tmp_path / "run", ["snn", "coxph"], epochs=1))
    out = predict_run(run, syn_all.cohort_csv, model="snn")
    assert len(out) == 240 and {"risk_fold0", "risk_fold1", "risk_fold2", "risk_group"} <= set(out.columns)
    surv = out[[c for c in out.columns if c.startswith("surv_t")]].to_numpy()
    assert (surv[:, 1:] <= surv[:, :-1] + 1e-9).all()
    cox = predict_run(run, syn_all.cohort_csv, model="coxph")
    assert cox["risk"].notna().all()


def test_per_model_training_overrides(syn_all, tmp_path):
    """A model's `train` settings override the experiment's for that model only, and define its identity."""
    from kemm.model.errors import ConfigError
    from kemm.model.run.registry import check_models
    from kemm.model.run.train import model_identity

    cfg = _cfg(syn_all, tmp_path / "run", ["snn"], epochs=1)
    long = cfg.models[0].model_copy(update={"label": "snn_long", "train": {"epochs": 3}})
    cfg = cfg.model_copy(update={"models": [*cfg.models, long]})
    check_models(cfg)
    run = run_experiment(cfg)
    hist = {m: json.loads((run / "folds" / m / "fold_0" / "metrics.json").read_text())["history"] for m in ("snn", "snn_long")}
    assert (len(hist["snn"]), len(hist["snn_long"])) == (1, 3)
    assert model_identity(cfg.models[0], cfg) != model_identity(long.model_copy(update={"label": None}), cfg)
    # settings added later (train.ensemble, train.linear_part) at their defaults keep the identity older runs recorded
    import hashlib
    from kemm.model.run.config import DISPLAY_ONLY
    old = {"name": "snn", "hparams": cfg.models[0].hparams,
           "train": cfg.train.model_dump(mode="json", exclude={*DISPLAY_ONLY, "ensemble", "linear_part"})}
    assert model_identity(cfg.models[0], cfg) == hashlib.sha256(json.dumps(old, sort_keys=True, default=str).encode()).hexdigest()[:16]
    ens = cfg.models[0].model_copy(update={"train": {"ensemble": 3}})
    assert model_identity(ens, cfg) != model_identity(cfg.models[0], cfg)
    bad = cfg.model_copy(update={"models": [long.model_copy(update={"train": {"epochs": 0}})]})
    with pytest.raises(ConfigError, match=r"model 'snn_long': train.epochs: .*greater than or equal to 1"):
        check_models(bad)
    lin = cfg.model_copy(update={"models": [cfg.models[0].model_copy(update={"name": "coxph", "train": {"lr": 1.0}})]})
    with pytest.raises(ConfigError, match="neural models only"):
        check_models(lin)


def test_seed_ensemble_mixture_and_checkpoint(syn_all, tmp_path):
    """train.ensemble trains n networks; prediction = their mixture survival; the checkpoint keeps all n."""
    import numpy as np
    import torch

    from kemm.model.nn.losses import hazards_to_survival
    from kemm.model.run.neural import NeuralFoldModel, ensemble_logits
    from kemm.model.run.rundir import RunDir

    a, b = np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)
    assert ensemble_logits([a]) is a
    mix = hazards_to_survival(torch.as_tensor(ensemble_logits([a, b]))).numpy()
    want = (hazards_to_survival(torch.as_tensor(a)) + hazards_to_survival(torch.as_tensor(b))).numpy() / 2
    np.testing.assert_allclose(mix, want, atol=1e-5)

    run = run_experiment(_cfg(syn_all, tmp_path / "run", ["snn"], epochs=2, ensemble=3))
    rec = json.loads((run / "folds" / "snn" / "fold_0" / "metrics.json").read_text())
    assert sorted({h["member"] for h in rec["history"]}) == [0, 1, 2] and len(rec["history"]) == 6
    fm = NeuralFoldModel.load(RunDir(run).fold("snn", 0))
    assert len(fm.nets) == 3
    sd = [n.state_dict() for n in fm.nets]
    assert any(not torch.equal(sd[0][k], sd[1][k]) for k in sd[0])  # different seeds, different weights
    preds = pd.read_csv(run / "folds" / "snn" / "fold_0" / "predictions.csv")
    from kemm.model.run.train import prepare
    exp = prepare(_cfg(syn_all, tmp_path / "run", ["snn"], epochs=2, ensemble=3))
    risk = fm.predict_risk(exp.inputs, list(preds["case_id"]))
    np.testing.assert_allclose(risk, preds["risk"].to_numpy(), rtol=1e-5, atol=1e-6)


def test_evaluate_says_when_a_run_is_partial(syn_all, tmp_path):
    """issue 12: `kemm evaluate` on a half-finished run names the models with missing folds."""
    from typer.testing import CliRunner

    from kemm.cli import app
    from kemm.model.run.evaluate import partial_run_warning

    cfg = _interrupted_run(syn_all, tmp_path / "run")
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "run"), "--no-folds"])
    assert r.exit_code == 0, r.output
    assert "partial run (snn 2 of 3, coxph 2 of 3 folds finished)" in " ".join(r.output.split())
    run_experiment(cfg)
    assert partial_run_warning(tmp_path / "run") is None


def test_output_dir_with_foreign_files_is_refused_and_restart_keeps_them(syn_all, tmp_path):
    """issue 12: kemm wrote into any folder and --restart removed a whole folds/ with a user's files."""
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "results.csv").write_text("my own results\n")
    with pytest.raises(RunError, match=r"is not empty and holds no kemm run"):
        run_experiment(_cfg(syn_all, foreign, ["coxph"], epochs=1))
    assert sorted(p.name for p in foreign.iterdir()) == ["results.csv"]

    run = run_experiment(_cfg(syn_all, tmp_path / "run", ["coxph"], epochs=1))
    note = run / "folds" / "coxph" / "fold_0" / "my_notes.txt"
    note.write_text("keep me")
    started = []
    run_experiment(_cfg(syn_all, tmp_path / "run", ["coxph"], epochs=1), restart=True,
                   on_fold_start=lambda m, k: started.append(k))
    assert started == [0, 1, 2] and note.read_text() == "keep me"
