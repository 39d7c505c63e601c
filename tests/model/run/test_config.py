"""Experiment config: strict keys with dotted paths, overrides, shipped YAML files."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kemm.model.errors import ConfigError
from kemm.model.run.config import apply_overrides, load_config, parse_config

ROOT = Path(__file__).resolve().parents[3]
MIN = {"data": {"cohort": "c.csv"}, "models": [{"name": "kemm"}]}


def test_minimal_config_defaults():
    cfg = parse_config(MIN)
    assert cfg.train.epochs == 20 and cfg.train.early_stopping.enabled is False
    assert cfg.data.endpoint == "OS" and cfg.run_dir == Path("runs/experiment")
    assert cfg.main == "kemm"


def test_unknown_key_error_has_dotted_path_and_file(tmp_path):
    p = tmp_path / "x.yaml"
    bad = {"data": {"cohort": "c.csv", "columns": {"cae_id": "id"}}, "models": [{"name": "kemm"}],
           "train": {"early_stopping": {"patince": 3}}}
    p.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "data.columns.cae_id" in msg and "train.early_stopping.patince" in msg
    assert str(p) in msg and "unknown key" in msg


def test_wrong_types_and_missing_keys():
    with pytest.raises(ConfigError, match=r"models: required key is missing"):
        parse_config({"data": {"cohort": "c.csv"}})
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        parse_config({**MIN, "train": {"epochs": 0}})
    with pytest.raises(ConfigError, match="genomics.signatures"):
        parse_config({"data": {"cohort": "c", "genomics": {"groups": "signatures"}}, "models": [{"name": "snn"}]})
    with pytest.raises(ConfigError, match="unique"):
        parse_config({**MIN, "models": [{"name": "kemm"}, {"name": "kemm"}]})


def test_overrides():
    d = apply_overrides({"train": {"epochs": 3}}, ["train.epochs=7", "knowledge.report=src2", "train.lr=1e-3"])
    assert d == {"train": {"epochs": 7, "lr": 1e-3}, "knowledge": {"report": "src2"}}


def test_identity_ignores_models_and_output():
    a = parse_config({**MIN, "output_dir": "a"})
    b = parse_config({**MIN, "output_dir": "b", "models": [{"name": "snn"}]})
    c = parse_config({**MIN, "train": {"epochs": 3}})
    assert a.identity() == b.identity() != c.identity()


@pytest.mark.parametrize("name", ["demo.yaml", "template.yaml"])
def test_shipped_configs_parse(name):
    cfg = load_config(ROOT / "experiments" / name)
    assert cfg.models


def test_demo_yaml_matches_the_demo_pipeline():
    from kemm.pipelines import demo_config

    shipped = load_config(ROOT / "experiments" / "demo.yaml")
    assert shipped.model_dump() == parse_config(demo_config("runs/demo")).model_dump()
