"""Data layer: cohort tables, splits, genomics, bags, dataset/collate, boundary errors."""
from __future__ import annotations

import re
import zipfile

import h5py

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import SHARED_DATA
from kemm.model.data.bags import BagStore, load_slide_features, sample_patches
from kemm.model.data.cohort import load_cohort
from kemm.model.errors import DataError
from kemm.model.run.config import ColumnMap
from kemm.model.data.dataset import SurvivalData, collate
from kemm.model.data.genomics import GenomicScaler, all_group, groups_from_pathways, groups_from_signatures
from kemm.model.data.knowledge import TextTable
from kemm.model.data.splits import check_folds, load_splits, make_splits, read_split_file, write_splits

RAW = SHARED_DATA / "raw"


def _table(tmp_path, rows=None, name="cohort.csv"):
    rows = rows or [
        {"case_id": "TCGA-AA-0001", "slide_id": "s1.svs", "survival_months": 10.0, "censorship": 0, "oncotree_code": "BLCA", "age": 60, "is_female": 0, "G1_rnaseq": 1.0, "G2_rnaseq": 2.0},
        {"case_id": "TCGA-AA-0001", "slide_id": "s2.svs", "survival_months": 10.0, "censorship": 0, "oncotree_code": "BLCA", "age": 60, "is_female": 0, "G1_rnaseq": 1.0, "G2_rnaseq": 2.0},
        {"case_id": "TCGA-AA-0002", "slide_id": "s3.svs", "survival_months": 20.0, "censorship": 1, "oncotree_code": "BLCA", "age": 70, "is_female": 1, "G1_rnaseq": 3.0, "G2_rnaseq": 0.0},
        {"case_id": "TCGA-AA-0003", "slide_id": "s4.svs", "survival_months": 5.0, "censorship": 0, "oncotree_code": "BLCA", "age": 50, "is_female": 1, "G1_rnaseq": 5.0, "G2_rnaseq": 4.0},
    ]
    p = tmp_path / name
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


# -- cohort tables ---------------------------------------------------------------------
def test_cohort_gathers_slides_and_flips_censorship(tmp_path):
    c = load_cohort(_table(tmp_path))
    t = c.table
    assert list(t.index) == ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003"]
    assert t.loc["TCGA-AA-0001", "slide_ids"] == ["s1.svs", "s2.svs"]
    assert list(t["event"]) == [1, 0, 1]  # censorship 1 = censored -> event 0
    assert c.omic_columns == ["G1_rnaseq", "G2_rnaseq"]


def test_missing_column_names_file_and_column(tmp_path):
    p = _table(tmp_path)
    with pytest.raises(DataError) as e:
        load_cohort(p, columns=ColumnMap(time="os_months"))
    msg = str(e.value)
    assert "os_months" in msg and "cohort.csv" in msg and "data.columns.time" in msg


@pytest.mark.parametrize(
    "value,needle", [(float("nan"), "NaN"), (-3.0, "negative")]
)
def test_bad_times_name_case(tmp_path, value, needle):
    p = _table(tmp_path)
    df = pd.read_csv(p)
    df.loc[df.case_id == "TCGA-AA-0002", "survival_months"] = value
    df.to_csv(p, index=False)
    with pytest.raises(DataError) as e:
        load_cohort(p)
    assert needle in str(e.value) and "TCGA-AA-0002" in str(e.value) and "survival_months" in str(e.value)


def test_conflicting_labels_and_duplicate_slides(tmp_path):
    p = _table(tmp_path)
    df = pd.read_csv(p)
    df.loc[1, "survival_months"] = 11.0
    df.to_csv(p, index=False)
    with pytest.raises(DataError, match="TCGA-AA-0001.*conflicting"):
        load_cohort(p)
    df = pd.read_csv(_table(tmp_path))
    df.loc[1, "slide_id"] = "s1.svs"
    df.to_csv(p, index=False)
    with pytest.raises(DataError, match="duplicate slide id.*s1.svs"):
        load_cohort(p)


def test_zip_member_with_dotdot_is_read_in_memory(tmp_path):
    src = _table(tmp_path)
    z = tmp_path / "tcga_x_all_clean.csv.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("../evil/tcga_x_all_clean.csv.zip", src.read_bytes())
    c = load_cohort(z)
    assert len(c) == 3
    assert not (tmp_path.parent / "evil").exists()


def test_survpath_endpoints(tmp_path):
    rows = [
        {"case_id": f"TCGA-AA-{i:04d}", "slide_id": f"s{i}.svs", "survival_months": 10.0 + i, "censorship": i % 2,
         "survival_months_dss": 8.0 + i, "censorship_dss": 1, "survival_months_pfi": 2.0 + i, "censorship_pfi": 0}
        for i in range(4)
    ]
    p = _table(tmp_path, rows, "tcga_x.csv")
    dss = load_cohort(p, endpoint="DSS").table
    pfi = load_cohort(p, endpoint="PFI").table
    assert list(dss["time"]) == [8.0, 9.0, 10.0, 11.0] and dss["event"].sum() == 0
    assert list(pfi["time"]) == [2.0, 3.0, 4.0, 5.0] and pfi["event"].sum() == 4


@pytest.mark.realdata
def test_real_mcat_zip():
    z = RAW / "MCAT" / "datasets_csv_sig" / "tcga_blca_all_clean.csv.zip"
    if not z.is_file():
        pytest.skip(f"real data absent: {z}")
    c = load_cohort(z)
    assert c.table.index.is_unique and len(c) > 300
    assert len([x for x in c.omic_columns if x.endswith("_rnaseq")]) > 1000
    sig = RAW / "MCAT" / "datasets_csv_sig" / "signatures.csv"
    g = groups_from_signatures(sig, list(c.table.columns))
    assert len(g) == 6 and all(d > 0 for d in g.dims)
    folds = load_splits(RAW / "MCAT" / "splits" / "5foldcv" / "tcga_blca", c.case_ids)
    assert len(folds) == 5
    vals = [set(f.val) for f in folds]
    assert all(not (a & b) for i, a in enumerate(vals) for b in vals[i + 1:])


# -- splits ----------------------------------------------------------------------------
def test_split_file_with_padded_val(tmp_path):
    p = tmp_path / "splits_0.csv"
    p.write_text(",train,val\n0,A,C\n1,B,\n2,D,\n")
    tr, va = read_split_file(p)
    assert tr == ["A", "B", "D"] and va == ["C"]


@pytest.mark.realdata
def test_real_split_file():
    p = RAW / "MCAT" / "splits" / "5foldcv" / "tcga_blca" / "splits_0.csv"
    if not p.is_file():
        pytest.skip(f"real data absent: {p}")
    tr, va = read_split_file(p)
    assert len(va) < len(tr) and "" not in va and not set(tr) & set(va)
    assert all(x.startswith("TCGA-") and len(x) == 12 for x in tr + va)


def test_split_case_not_in_table_names_case_and_file(tmp_path):
    d = tmp_path / "splits"
    d.mkdir()
    (d / "splits_0.csv").write_text(",train,val\n0,A,B\n1,ZZ,\n")
    with pytest.raises(DataError) as e:
        load_splits(d, ["A", "B"])
    assert "'ZZ'" in str(e.value) and "splits_0.csv" in str(e.value)


def test_generated_splits_are_seeded_stratified_and_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(103)]
    t, e = rng.exponential(30, 103), (rng.uniform(size=103) < 0.4).astype(int)
    f1, f2 = make_splits(ids, t, e, 5, seed=3), make_splits(ids, t, e, 5, seed=3)
    assert [f.val for f in f1] == [f.val for f in f2]
    assert sorted(sum((f.val for f in f1), [])) == ids
    sizes = [len(f.val) for f in f1]
    assert max(sizes) - min(sizes) <= 1
    ev = pd.Series(e, index=ids)
    rates = [ev[f.val].mean() for f in f1]
    assert max(rates) - min(rates) < 0.15
    write_splits(f1, tmp_path)
    back = load_splits(tmp_path, ids)
    assert [f.val for f in back] == [f.val for f in f1]


def test_all_censored_training_fold_is_an_error():
    ids = ["A", "B", "C", "D"]
    folds = make_splits(ids, np.arange(4.0) + 1, np.zeros(4, int), 2, 0)
    with pytest.raises(DataError, match="all .* training patients are censored"):
        check_folds(folds, pd.Series(0, index=ids))


def test_empty_validation_fold_is_an_error_naming_the_file(tmp_path):
    """issue 12: was `torch.cat(): expected a non-empty list` after training."""
    from kemm.model.data.splits import Fold

    ids = ["A", "B", "C", "D"]
    folds = [Fold(0, ["A", "B"], ["C", "D"], "s0.csv"), Fold(1, ["A", "B", "C", "D"], [], "splits_1.csv")]
    with pytest.raises(DataError, match=r"fold 1 \(splits_1.csv\): no validation patient"):
        check_folds(folds, pd.Series(1, index=ids))


# -- genomics --------------------------------------------------------------------------
def test_signature_groups_and_all_group(tmp_path):
    sig = tmp_path / "signatures.csv"
    pd.DataFrame({"Oncogenes": ["G1", "G3"], "Kinases": ["G2", None]}).to_csv(sig, index=False)
    cols = ["G1_rnaseq", "G1_cnv", "G2_rnaseq", "G2_mut", "age"]
    g = groups_from_signatures(sig, cols)
    assert g.names == ["Oncogenes", "Kinases"]
    assert g.columns == [["G1_rnaseq", "G1_cnv"], ["G2_rnaseq", "G2_mut"]]
    assert all_group(cols).columns == [["G1_rnaseq", "G1_cnv", "G2_rnaseq", "G2_mut"]]
    comp = tmp_path / "comps.csv"
    pd.DataFrame({"gene": ["G1", "G2"], "PW_A": [1, 0], "PW_B": [1, 1]}).to_csv(comp, index=False)
    pw = groups_from_pathways(comp, cols, modalities=["rnaseq"])
    assert pw.columns == [["G1_rnaseq"], ["G1_rnaseq", "G2_rnaseq"]]


def test_scaler_fitted_on_training_rows_only():
    df = pd.DataFrame({"a_rnaseq": [0.0, 2.0, 100.0, np.nan], "b_rnaseq": [1.0, 1.0, 5.0, np.nan]}, index=list("wxyz"))
    s = GenomicScaler(["a_rnaseq", "b_rnaseq"]).fit(df.loc[["w", "x"]])
    assert s.mean_.tolist() == [1.0, 1.0]  # the held-out 100.0 did not leak in
    z, present = s.transform(df)
    assert present.tolist() == [True, True, True, False]
    assert z[0, 0] == -1.0 and z[2, 0] == 99.0
    assert z[2, 1] == 4.0  # constant training column: centred, not divided by 0


# -- bags ------------------------------------------------------------------------------
def test_pt_and_h5_bags_equal_and_concatenated(tmp_path):
    x = torch.randn(7, 5)
    torch.save(x, tmp_path / "slideA.pt")
    with h5py.File(tmp_path / "slideB.h5", "w") as f:
        f.create_dataset("features", data=x.numpy()[None])  # [1, N, D] is squeezed
        f.create_dataset("coords", data=np.zeros((7, 2), np.int32))
    torch.save({"features": x * 2}, tmp_path / "slideC.pt")
    assert torch.equal(load_slide_features(tmp_path / "slideA.pt"), load_slide_features(tmp_path / "slideB.h5"))
    store = BagStore(tmp_path, {"P1": ["slideA.svs", "slideB.svs"], "P2": ["slideC.svs"], "P3": []})
    assert store.dim == 5 and store.load("P1").shape == (14, 5)
    assert torch.equal(store.load("P2"), x * 2)
    assert store.load("P3") is None
    g = torch.Generator().manual_seed(0)
    assert sample_patches(store.load("P1"), 4, g).shape == (4, 5)


def test_corrupt_h5_is_one_line_naming_the_file(tmp_path):
    """issue 12: a truncated or non-HDF5 .h5 raised h5py's OSError."""
    from kemm.model.data.bags import feature_dim

    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    with h5py.File(tmp_path / "good.h5", "w") as f:
        f.create_dataset("features", data=x)
    bad = tmp_path / "bad.h5"
    bad.write_bytes((tmp_path / "good.h5").read_bytes()[:300])
    (tmp_path / "text.h5").write_text("not hdf5")
    for p in (bad, tmp_path / "text.h5"):
        for read in (load_slide_features, feature_dim):
            with pytest.raises(DataError, match=rf"{p.name}: cannot read as HDF5 .*re-extract") as e:
                read(p)
            assert "\n" not in str(e.value)


def test_missing_feature_file_and_dim_mismatch(tmp_path):
    torch.save(torch.randn(3, 5), tmp_path / "a.pt")
    with pytest.raises(DataError) as e:
        BagStore(tmp_path, {"TCGA-AA-0009": ["nofile.svs"]})
    assert "nofile" in str(e.value) and "TCGA-AA-0009" in str(e.value)
    masked = BagStore(tmp_path, {"P": ["nofile.svs"], "Q": ["a.svs"]}, missing="mask")
    assert masked.load("P") is None
    torch.save(torch.randn(3, 6), tmp_path / "b.pt")
    store = BagStore(tmp_path, {"Q": ["a.svs"], "R": ["b.svs"]})
    with pytest.raises(DataError, match="dimension 6, expected 5"):
        store.load("R")


# -- dataset + collate -----------------------------------------------------------------
def test_dataset_masks_missing_modalities(tmp_path):
    p = _table(tmp_path)
    df = pd.read_csv(p)
    df.loc[df.case_id == "TCGA-AA-0003", ["G1_rnaseq", "G2_rnaseq"]] = np.nan
    df.to_csv(p, index=False)
    c = load_cohort(p)
    for s, n in (("s1", 4), ("s2", 2), ("s3", 3)):
        torch.save(torch.randn(n, 8), tmp_path / f"{s}.pt")
    store = BagStore(tmp_path, dict(zip(c.case_ids, c.table["slide_ids"])), missing="mask")
    report = TextTable("r", "enc", 6, {"TCGA-AA-0001": np.ones((2, 6), np.float32)})
    pbk = TextTable("p", "enc", 6, {"BLCA": np.ones((3, 6), np.float32)})
    data = SurvivalData(c, all_group(c.omic_columns), store, report, pbk)
    fd = data.fold(c.case_ids, c.case_ids, n_bins=2)
    b = data.collate()([fd.eval[i] for i in range(3)])
    assert b["wsi"].shape == (3, 6, 8)
    assert b["wsi_mask"].sum(1).tolist() == [6, 3, 0]  # P3's slide s4 has no file: masked
    assert b["omics_mask"].tolist() == [True, True, False]
    assert b["report_mask"].sum(1).tolist() == [2, 0, 0]
    assert b["pbk_mask"].sum(1).tolist() == [3, 3, 3]
    assert b["label"].dtype == torch.long and b["censorship"].tolist() == [0.0, 1.0, 0.0]
    b2 = collate([fd.eval[i] for i in range(3)])
    assert torch.equal(b2["wsi_mask"], b["wsi_mask"])


def test_report_source_matching_no_case_is_an_error(tmp_path):
    c = load_cohort(_table(tmp_path))
    report = TextTable("wrong-source", "enc", 6, {"TCGA-ZZ-9999": np.ones((1, 6), np.float32)})
    with pytest.raises(DataError, match="wrong-source.*no entry for any case"):
        SurvivalData(c, None, None, report, None)


def test_pbk_source_without_the_cohort_type_masks_pbk_with_a_warning(tmp_path):
    """issue 12: a type without PBK trains with those patients' PBK tokens masked, and says so."""
    c = load_cohort(_table(tmp_path))  # cancer type BLCA
    pbk = TextTable("pbk-src", "enc", 6, {"LUAD": np.ones((2, 6), np.float32)})
    d = SurvivalData(c, None, None, None, pbk)
    (w,) = d.warnings
    assert re.search(r"'pbk-src' has no PBK for 3 of 3 patients .*BLCA \(3\).*masked.*build pbk", w), w
    fd = d.fold(c.case_ids, c.case_ids, n_bins=2)
    assert d.collate()([fd.eval[i] for i in range(3)])["pbk_mask"].sum().item() == 0
    assert SurvivalData(c, None, None, None, pbk, strict_knowledge=False).warnings == []  # predict: silent
    covered = TextTable("pbk-src", "enc", 6, {"BLCA": np.ones((2, 6), np.float32)})
    assert SurvivalData(c, None, None, None, covered).warnings == []
    grounded = TextTable("g", "enc", 6, {c.case_ids[0]: np.ones((2, 6), np.float32)})  # per patient, some without
    assert SurvivalData(c, None, None, None, grounded).warnings == []


def test_a_missing_cancer_type_stays_missing_and_is_named_so(tmp_path):
    p = _table(tmp_path)
    df = pd.read_csv(p)
    col = "oncotree_code" if "oncotree_code" in df.columns else "cancer_type"
    df.loc[df.case_id == "TCGA-AA-0003", col] = np.nan
    df.to_csv(p, index=False)
    c = load_cohort(p)
    assert pd.isna(c.table.loc["TCGA-AA-0003", "cancer_type"])  # missing, not the string "NAN"
    pbk = TextTable("pbk-src", "enc", 6, {"LUAD": np.ones((2, 6), np.float32)})
    (w,) = SurvivalData(c, None, None, None, pbk).warnings
    assert "no cancer_type (1)" in w and "NAN" not in w
