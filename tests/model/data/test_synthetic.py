"""Synthetic cohort: files in the documented layouts, deterministic, realistic censoring."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from kemm.model.data.bags import BagStore
from kemm.model.data.cohort import load_cohort
from kemm.model.data.genomics import groups_from_signatures
from kemm.model.data.synthetic import make_synthetic_cohort, truth_knowledge


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return make_synthetic_cohort(tmp_path_factory.mktemp("syn"), n_patients=60, seed=1, patches=(20, 40), wsi_dim=16)


def _digest(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_layouts_load_through_the_data_layer(syn):
    c = load_cohort(syn.cohort_csv)
    assert len(c) == 60 and c.table["cancer_type"].eq("BLCA").all()
    assert 0.35 <= syn.censored_fraction <= 0.65
    assert (c.table["time"] > 0).all()
    g = groups_from_signatures(syn.signatures_csv, list(c.table.columns))
    assert len(g) == 6 and set(g.dims) == {8}
    store = BagStore(syn.features_dir, dict(zip(c.case_ids, c.table["slide_ids"])))
    assert store.dim == 16
    exts = {p.suffix for p in syn.features_dir.iterdir()}
    assert exts == {".pt", ".h5"}
    rep = pd.read_csv(syn.reports_csv)
    assert list(rep.columns) == ["pdf_file_name_path", "ocr_text"]
    assert rep["pdf_file_name_path"].str.match(r"^TCGA-SY-\d{4}\.").all()
    assert rep["ocr_text"].str.contains("stage|Stage").mean() > 0.8


def test_deterministic(tmp_path, syn):
    again = make_synthetic_cohort(tmp_path, n_patients=60, seed=1, patches=(20, 40), wsi_dim=16)
    for a, b in ((syn.cohort_csv, again.cohort_csv), (syn.reports_csv, again.reports_csv)):
        assert _digest(a) == _digest(b)


def test_signal_is_planted(syn):
    truth = pd.read_csv(syn.truth_csv)
    c = load_cohort(syn.cohort_csv).table.loc[truth["case_id"]]
    from kemm.model.run.metrics import harrell_c

    assert harrell_c(c["time"], c["event"], truth["eta"]) > 0.7


def test_reports_only_signal_and_truth_knowledge(tmp_path):
    s = make_synthetic_cohort(tmp_path, n_patients=40, seed=2, signal="reports", patches=(10, 20), wsi_dim=8)
    truth = pd.read_csv(s.truth_csv)
    assert np.allclose(truth["eta"], 1.8 * truth["z_report"])
    rep, pbk = truth_knowledge(s, dim=12)
    assert set(rep.by_key) == set(truth.loc[truth["has_report"], "case_id"])
    assert rep.dim == 12 and list(pbk.by_key) == ["BLCA"]
