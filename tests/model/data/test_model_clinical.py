"""Issue 16: the neural models receive cohort covariates (age, sex), scaled on the training fold only."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from kemm.model.data.clinical import ClinicalScaler
from kemm.model.errors import ConfigError
from kemm.model.run.config import REPORT_FIELD_NAMES, parse_config
from kemm.model.nn.registry import ModelSpec, build_model
from kemm.model.data.synthetic import make_synthetic_cohort
from kemm.model.run.train import run_experiment


def test_report_field_names_match_the_knowledge_half():
    import kemm.knowledge as knowledge

    assert tuple(REPORT_FIELD_NAMES) == tuple(knowledge.REPORT_COVARIATES)


def test_scaler_uses_training_statistics_only():
    tr = pd.DataFrame({"age": [50.0, 60.0, np.nan, 70.0], "sex": [0.0, 1.0, 1.0, 0.0]})
    s = ClinicalScaler(["age", "sex"]).fit(tr)
    assert s.mean_ == pytest.approx([60.0, 0.5]) and s.out_columns_ == ["age", "sex", "age__missing"]
    before = s.state_dict()
    va = pd.DataFrame({"age": [1000.0, np.nan], "sex": [1.0, 0.0]})
    z = s.transform(va)
    assert s.state_dict() == before  # transforming validation rows never moves the scaler
    assert z.shape == (2, 3) and np.isfinite(z).all()
    assert z[1, 0] == 0.0 and z[1, 2] == 1.0  # missing -> training mean, indicator on
    assert z[0, 0] == pytest.approx((1000 - 60) / 10.0)
    s2 = ClinicalScaler.from_state(json.loads(json.dumps(s.state_dict())))
    np.testing.assert_array_equal(s2.transform(va), z)


@pytest.mark.parametrize("name", ["kemm", "kemm_noknow", "snn", "text"])
def test_model_with_clinical_dim_uses_age(name):
    torch.manual_seed(0)
    spec = ModelSpec(wsi_dim=None, omic_dims=[5, 3], text_dim=8, n_bins=4, clinical_dim=3)
    net = build_model(name, spec, dim=16).eval()
    b = {
        "omics": [torch.randn(2, 5), torch.randn(2, 3)], "omics_mask": torch.ones(2, dtype=torch.bool),
        "report": torch.randn(2, 3, 8), "report_mask": torch.ones(2, 3, dtype=torch.bool),
        "pbk": torch.randn(2, 2, 8), "pbk_mask": torch.ones(2, 2, dtype=torch.bool),
        "clinical": torch.zeros(2, 3),
    }
    a = net(b)["logits"]
    b["clinical"] = b["clinical"].clone()
    b["clinical"][:, 0] = 2.0  # an older patient (standardised age +2 sd)
    assert not torch.allclose(a, net(b)["logits"])
    none = build_model(name, ModelSpec(wsi_dim=None, omic_dims=[5, 3], text_dim=8, n_bins=4, clinical_dim=0), dim=16)
    assert not any("clinical" in n for n, _ in none.named_parameters())


def test_report_fields_are_not_default_model_covariates():
    base = {"data": {"cohort": "x.csv"}, "models": [{"name": "kemm"}]}
    assert parse_config(base).data.model_clinical == ["age", "sex"]
    with pytest.raises(ConfigError, match="refined-report fields"):
        parse_config({**base, "data": {"cohort": "x.csv", "model_clinical": ["age", "stage"]}})
    # explicit per-model opt-in is allowed
    cfg = parse_config({**base, "models": [{"name": "kemm", "clinical": ["age", "stage"]}]})
    assert cfg.models[0].clinical == ["age", "stage"]


@pytest.mark.slow
def test_run_records_covariates_and_checkpoint_scaler(tmp_path):
    syn = make_synthetic_cohort(tmp_path / "syn", n_patients=60, seed=1, patches=(5, 10), wsi_dim=8)
    cfg = parse_config({
        "name": "c", "output_dir": str(tmp_path / "run"),
        "data": {"cohort": str(syn.cohort_csv), "n_folds": 2,
                 "genomics": {"groups": "signatures", "signatures": str(syn.signatures_csv)}},
        "models": [{"name": "snn", "hparams": {"dim": 8}}, {"name": "snn", "label": "snn_none", "clinical": [],
                                                            "hparams": {"dim": 8}}],
        "train": {"epochs": 1, "batch_size": 16, "progress": False},
    })
    run = run_experiment(cfg)
    m = json.loads((run / "folds" / "snn" / "fold_0" / "metrics.json").read_text())
    assert m["clinical"][:2] == ["age", "sex"]
    assert json.loads((run / "folds" / "snn_none" / "fold_0" / "metrics.json").read_text())["clinical"] == []
    ck = torch.load(run / "folds" / "snn" / "fold_0" / "model.pt", weights_only=True)
    assert ck["spec"]["clinical_dim"] == len(m["clinical"]) and ck["clinical"]["columns"] == ["age", "sex"]
    # the scaler's statistics are those of the training fold's patients
    t = pd.read_csv(syn.cohort_csv).drop_duplicates("case_id").set_index("case_id")
    train_ids = pd.read_csv(run / "splits" / "splits_0.csv")["train"].dropna().tolist()
    assert ck["clinical"]["mean"][0] == pytest.approx(t.loc[train_ids, "age"].mean())
