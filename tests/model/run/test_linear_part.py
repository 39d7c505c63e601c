"""train.linear_part: a penalised CoxPH beside the network, mixed in (mixture) or as a logit offset."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from kemm.model.data.synthetic import make_synthetic_cohort
from kemm.model.errors import ConfigError, RunError
from kemm.model.linear.text_genomics import CoxPHTextGenomics
from kemm.model.nn.losses import hazards_to_survival
from kemm.model.run.config import LinearPartConfig, parse_config
from kemm.model.run.neural import NeuralFoldModel, baseline_logits, ensemble_logits, output_layer
from kemm.model.run.rundir import RunDir
from kemm.model.run.train import prepare, run_experiment

HP = {"dim": 32, "dropout": 0.1}


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return make_synthetic_cohort(tmp_path_factory.mktemp("lin"), n_patients=160, seed=1, patches=(5, 10), wsi_dim=8)


def _cfg(syn, out, models, reports=True, **train):
    return parse_config({
        "name": "lin", "output_dir": str(out),
        "data": {"cohort": str(syn.cohort_csv), "n_folds": 3, "clinical": ["age", "sex"], "model_clinical": ["age", "sex"],
                 "genomics": {"groups": "signatures", "signatures": str(syn.signatures_csv)},
                 "reports": [str(syn.reports_csv)] if reports else []},
        "models": models,
        "train": {"epochs": 2, "lr": 1e-3, "batch_size": 16, "progress": False, **train},
    })


def test_mixture_of_survival_curves():
    """ensemble_logits with a linear curve: S = (1 - w) * mean of the members + w * linear."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 6, 4)).astype(np.float32)
    s_lin = np.cumprod(rng.uniform(0.6, 0.95, size=(6, 4)), axis=1)
    got = hazards_to_survival(torch.as_tensor(ensemble_logits([a, b], s_lin, 0.3))).numpy()
    nets = (hazards_to_survival(torch.as_tensor(a)) + hazards_to_survival(torch.as_tensor(b))).numpy() / 2
    np.testing.assert_allclose(got, 0.7 * nets + 0.3 * s_lin, atol=1e-5)
    one = hazards_to_survival(torch.as_tensor(ensemble_logits([a], s_lin, 0.5))).numpy()
    np.testing.assert_allclose(one, 0.5 * hazards_to_survival(torch.as_tensor(a)).numpy() + 0.5 * s_lin, atol=1e-5)


def test_baseline_logits_are_the_life_table():
    # bin 0: 5 at risk, 1 event -> 1/5; bin 1: 3 at risk (label >= 1), 1 event -> 1/3; bin 2: 1 at risk, 0 -> clipped
    label, event = np.array([0, 0, 1, 1, 2]), np.array([1, 0, 1, 0, 0])
    h = 1 / (1 + np.exp(-baseline_logits(label, event, 3)))
    np.testing.assert_allclose(h, [1 / 5, 1 / 3, 0.01], atol=1e-9)


def test_config_needs_a_block_and_merges_row_overrides(syn, tmp_path):
    with pytest.raises(ValueError, match="needs text, genomics or knowledge"):
        LinearPartConfig(enabled=True, text=False, genomics=False)
    cfg = _cfg(syn, tmp_path / "r", [{"name": "snn", "hparams": HP, "train": {"linear_part": {"enabled": True}}}],
               linear_part={"weight": 0.25})
    tc = cfg.models[0].train_config(cfg.train)
    assert tc.linear_part.enabled and tc.linear_part.weight == 0.25 and tc.linear_part.mode == "mixture"
    from kemm.model.run.registry import check_models
    bad = _cfg(syn, tmp_path / "r", [{"name": "snn", "hparams": HP, "train": {"linear_part": {"enabled": True, "mode": "x"}}}])
    with pytest.raises(ConfigError, match=r"model 'snn': train.linear_part.mode"):
        check_models(bad)


def test_mixture_run_predicts_the_mixture_and_reloads(syn, tmp_path):
    """A run with the linear part: predictions = mixture of the network and a CoxPH fitted on the training
    fold; the checkpoint (weights-only) rebuilds both; metrics.json records the linear fit."""
    models = [{"name": "snn", "hparams": HP, "label": "snn@lin", "train": {"linear_part": {"enabled": True, "weight": 0.4}}}]
    cfg = _cfg(syn, tmp_path / "run", models)
    run = run_experiment(cfg)
    fold = RunDir(run).fold("snn@lin", 0)
    rec = json.loads((run / "folds" / "snn@lin" / "fold_0" / "metrics.json").read_text())
    assert rec["linear_part"]["n_coef_nonzero"] >= 1
    fm = NeuralFoldModel.load(fold)
    assert fm.linear is not None and fm.linear.cfg.weight == 0.4
    exp = prepare(cfg)
    preds = pd.read_csv(run / "folds" / "snn@lin" / "fold_0" / "predictions.csv")
    ids = list(preds["case_id"])
    np.testing.assert_allclose(fm.predict_risk(exp.inputs, ids), preds["risk"].to_numpy(), rtol=1e-5, atol=1e-6)
    # the same CoxPH as coxph_text_genomics on these training patients (same blocks, same seed)
    train_ids = [c for c in exp.data.cohort.case_ids if c not in set(ids)]
    t = exp.data.cohort.table.loc[train_ids]
    X = t[["age", "sex", *exp.data.omic_columns]]
    texts = pd.Series([exp.data.report_texts.get(c, "") for c in train_ids], index=train_ids, dtype=object)
    ref = CoxPHTextGenomics(clinical=("age", "sex"), seed=0).fit(X, texts, t["time"], t["event"])
    Xv = exp.data.cohort.table.loc[ids, X.columns]
    tv = pd.Series([exp.data.report_texts.get(c, "") for c in ids], index=ids, dtype=object)
    np.testing.assert_allclose(fm.linear.offsets(exp.inputs, ids) + fm.linear.centre_, ref.predict_risk(Xv, tv), atol=1e-8)
    # prediction = mixture of the network alone and the linear curve at the bin ends
    s_mix = hazards_to_survival(torch.as_tensor(fm._logits(exp.inputs, ids))).numpy()
    fm2 = NeuralFoldModel.load(fold)
    fm2.linear = None
    s_net = hazards_to_survival(torch.as_tensor(fm2._logits(exp.inputs, ids))).numpy()
    s_lin = ref.predict_survival(Xv, tv, fm.edges[1:])
    np.testing.assert_allclose(s_mix, 0.6 * s_net + 0.4 * s_lin, atol=1e-4)


def test_offset_mode_starts_at_the_linear_model(syn, tmp_path):
    """Offset mode: the output layer starts at zero weights + life-table bias, so before any update the
    hazard logits are the baseline plus the cross-fitted linear predictor; training moves away from it."""
    models = [{"name": "snn", "hparams": HP, "label": "snn@offset",
               "train": {"linear_part": {"enabled": True, "mode": "offset", "folds": 3}}}]
    cfg = _cfg(syn, tmp_path / "run", models)
    run = run_experiment(cfg)
    fm = NeuralFoldModel.load(RunDir(run).fold("snn@offset", 0))
    assert fm.linear is not None and fm.linear.cfg.mode == "offset"
    exp = prepare(cfg)
    ids = list(pd.read_csv(run / "folds" / "snn@offset" / "fold_0" / "predictions.csv")["case_id"])
    lin = fm.linear.offsets(exp.inputs, ids)
    logits = fm._logits(exp.inputs, ids)
    # the network's residual is what is left after the offset; it is not zero after training
    residual = logits - lin[:, None]
    assert np.abs(residual - residual.mean(axis=0)).max() > 1e-4
    # a fresh network started at the offset predicts exactly baseline + offset
    from kemm.model.nn.registry import build_model
    from kemm.model.run.neural import _start_at_offset
    net = build_model("snn", fm.spec, **HP)
    label, event = np.array([0, 1, 2, 3, 3]), np.array([1, 1, 1, 0, 1])
    _start_at_offset(net, label, event, fm.spec.n_bins)
    assert torch.count_nonzero(output_layer(net, fm.spec.n_bins).weight) == 0
    fm.nets = [net]
    fm._cache.clear()
    np.testing.assert_allclose(fm._logits(exp.inputs, ids), baseline_logits(label, event, 4)[None, :] + lin[:, None],
                               atol=1e-5)


def test_text_part_without_reports_is_a_clear_error(syn, tmp_path):
    models = [{"name": "snn", "hparams": HP, "train": {"linear_part": {"enabled": True}}}]
    with pytest.raises(RunError, match=r"model 'snn': train.linear_part.text reads the raw report text; set data.reports"):
        run_experiment(_cfg(syn, tmp_path / "run", models, reports=False))
    # genomics only needs no report
    models = [{"name": "snn", "hparams": HP, "train": {"linear_part": {"enabled": True, "text": False}}}]
    run = run_experiment(_cfg(syn, tmp_path / "run2", models, reports=False))
    assert (run / "folds" / "snn" / "fold_2" / "predictions.csv").is_file()


# -- the knowledge block: the linear part reads the network's own knowledge tokens ------------
@pytest.fixture(scope="module")
def ksyn(tmp_path_factory):
    """80 synthetic patients with rules reports, their field sentences and grounded PBK (hash encoder)."""
    from fakes import rules_knowledge
    root = tmp_path_factory.mktemp("klin")
    s = make_synthetic_cohort(root / "data", n_patients=80, seed=2, patches=(5, 8), wsi_dim=8)
    rules_knowledge(s, root / "cache")
    return s, root / "cache"


def _kcfg(ksyn, out, models, knowledge=True):
    s, cache = ksyn
    return parse_config({
        "name": "klin", "output_dir": str(out),
        "data": {"cohort": str(s.cohort_csv), "n_folds": 3, "reports": [str(s.reports_csv)]},
        "knowledge": ({"report": ["rep-fields", "rep"], "pbk": "rep-grounded", "cache_dir": str(cache)} if knowledge else {}),
        "models": models, "train": {"epochs": 1, "batch_size": 16, "progress": False},
    })


KLIN = {"enabled": True, "clinical": [], "text": False, "genomics": False, "knowledge": True}


def test_knowledge_columns_are_the_tokens_the_network_reads(ksyn, tmp_path):
    from kemm.model.run.linear_part import knowledge_columns
    exp = prepare(_kcfg(ksyn, tmp_path / "r", [{"name": "text", "clinical": [], "hparams": {"dim": 8}}]))
    d = exp.data
    ids = d.cohort.case_ids
    K = knowledge_columns(d, ids, "text")
    emb = K[[c for c in K.columns if c.startswith("kemb:")]]
    assert emb.shape[1] == d.text_dim
    with_report = [c for c in ids if d.report.get(c) is not None]
    c = with_report[0]
    np.testing.assert_allclose(emb.loc[c].to_numpy(), d.report.get(c).mean(axis=0), rtol=1e-6)
    kinds = {k[len("kind:"):] for k in K.columns if k.startswith("kind:") and K.loc[c, k] == 1.0}
    assert kinds == set(d.report.kinds_of(c)) | set(d.pbk.kinds_of(c))
    assert any(k.startswith("pbk:") for k in kinds)  # grounded PBK kinds carry their direction
    without = [c for c in ids if d.report.get(c) is None]
    if without:
        assert emb.loc[without].isna().all(axis=None)


def test_knowledge_part_run_is_the_coxph_on_those_tokens_and_reloads(ksyn, tmp_path):
    from kemm.model.run.linear_part import knowledge_columns
    models = [{"name": "text", "label": "text@klin", "clinical": [], "hparams": {"dim": 8}, "train": {"linear_part": KLIN}}]
    cfg = _kcfg(ksyn, tmp_path / "run", models)
    run = run_experiment(cfg)
    fm = NeuralFoldModel.load(RunDir(run).fold("text@klin", 0))
    assert fm.linear is not None and fm.linear.cfg.knowledge
    exp = prepare(cfg)
    ids = list(pd.read_csv(run / "folds" / "text@klin" / "fold_0" / "predictions.csv")["case_id"])
    train_ids = [c for c in exp.data.cohort.case_ids if c not in set(ids)]
    t = exp.data.cohort.table.loc[train_ids]
    empty = lambda cs: pd.Series([""] * len(cs), index=cs, dtype=object)  # noqa: E731
    ref = CoxPHTextGenomics(clinical=(), seed=0).fit(knowledge_columns(exp.data, train_ids, "x"), empty(train_ids),
                                                     t["time"], t["event"])
    assert ref.state_["blocks"]["knowledge"]["kind_columns"]  # kinds held by >= 3 training patients are features
    got = fm.linear.offsets(exp.inputs, ids) + fm.linear.centre_
    np.testing.assert_allclose(got, ref.predict_risk(knowledge_columns(exp.data, ids, "x"), empty(ids)), atol=1e-8)
    assert np.isfinite(got).all()


def test_knowledge_part_without_knowledge_is_a_clear_error(ksyn, tmp_path):
    models = [{"name": "kemm_noknow", "hparams": {"dim": 8}, "train": {"linear_part": KLIN}}]
    with pytest.raises(RunError, match=r"model 'kemm_noknow': train.linear_part.knowledge reads the model's knowledge "
                                        r"tokens, and its profile gives none"):
        run_experiment(_kcfg(ksyn, tmp_path / "run", models, knowledge=False))


def test_knowledge_key_at_its_default_keeps_older_identities(syn, tmp_path):
    """Runs made before linear_part.knowledge existed resume: at its default the key is not in the identity."""
    from kemm.model.run.train import model_identity
    rows = [{"name": "snn", "label": a, "hparams": HP, "train": {"linear_part": lp}}
            for a, lp in (("a", {"enabled": True}), ("b", {"enabled": True, "knowledge": False}),
                          ("c", {"enabled": True, "knowledge": True}))]
    cfg = _cfg(syn, tmp_path / "r", rows)
    ida, idb, idc = (model_identity(m, cfg) for m in cfg.models)
    assert ida == idb != idc
    # the value this row had before the key was added (computed at commit 242ca9e)
    old = parse_config({"name": "x", "output_dir": "/tmp/x", "data": {"cohort": "/tmp/c.csv"},
                        "models": [{"name": "text", "label": "text@ens3lin", "clinical": [], "hparams": {"dim": 128},
                                    "train": {"ensemble": 3, "linear_part": {"enabled": True, "clinical": [],
                                                                             "genomics": False}}}]})
    assert model_identity(old.models[0], old) == "38ae32e6cdbd8c02"
