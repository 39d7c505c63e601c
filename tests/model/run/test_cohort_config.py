"""`kemm train` on a cohort config of a benchmark folder (experiments/tcga/<cohort>.yaml)."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kemm.cli import app
from kemm.model.errors import ConfigError
from kemm.model.run.config import DATA_ROOT_ENV, load_config

TCGA = Path(__file__).resolve().parents[3] / "experiments" / "tcga"
COHORT_FILES = sorted(p for p in TCGA.glob("*.yaml") if p.name != "base.yaml" and not p.name.startswith("smoke"))


@pytest.mark.parametrize("path", COHORT_FILES, ids=lambda p: p.stem)
def test_every_cohort_config_loads_over_base(path, tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    cfg = load_config(path, ["knowledge.report=[src-a]", "knowledge.pbk=[src-b]"], data_root=tmp_path)
    assert [m.key for m in cfg.models] == ["kemm", "kemm_noknow"]  # from base.yaml
    assert cfg.train.epochs == 20 and cfg.train.batch_size == 32  # base.yaml's train section
    assert cfg.data.cohort.startswith(str(tmp_path) + "/") and "{data_root}" not in cfg.data.cohort
    assert cfg.data.splits_dir.startswith(str(tmp_path))
    assert cfg.data.reports and all(r.startswith(str(tmp_path) + "/tcga-path-report/") for r in cfg.data.reports)
    assert cfg.knowledge.report_sources == ["src-a"] and cfg.knowledge.pbk_sources == ["src-b"]


def test_without_knowledge_only_the_no_knowledge_models(tmp_path, caplog):
    cfg = load_config(TCGA / "blca.yaml", data_root=tmp_path)
    assert [m.key for m in cfg.models] == ["kemm_noknow"]
    assert "kemm is left out" in caplog.text and "knowledge.report" in caplog.text


def test_data_root_from_env_and_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert load_config(TCGA / "luad.yaml").data.cohort.startswith(str(tmp_path))
    monkeypatch.delenv(DATA_ROOT_ENV)
    with pytest.raises(ConfigError, match=r"blca.yaml: data.cohort uses \{data_root\}; give .*--data-root .*KEMM_DATA_ROOT"):
        load_config(TCGA / "blca.yaml")
    with pytest.raises(ConfigError, match="is not a folder"):
        load_config(TCGA / "blca.yaml", data_root=tmp_path / "nope")


def test_cli_train_cohort_config_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    r = CliRunner().invoke(app, ["train", str(TCGA / "blca.yaml")])
    assert r.exit_code == 2 and "--data-root" in r.output and "Traceback" not in r.output
    # with a data root the config is valid; the first missing file is reported, not a config key
    r = CliRunner().invoke(app, ["train", str(TCGA / "blca.yaml"), "--data-root", str(tmp_path),
                                 "--output-dir", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    assert "unknown key" not in r.output and "required key" not in r.output
    assert "tcga_blca_all_clean" in r.output


def test_plain_config_unchanged(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("data: {cohort: c.csv}\nmodels: [kemm]\nbenchmark_note: 1\n")
    with pytest.raises(ConfigError, match="benchmark_note: unknown key"):
        load_config(p)
