"""Embedding store: dimension, determinism, incremental re-embedding, reader contract, mismatch refusal."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from fakes import IDENTITY, VALID_REPORT, HashEncoder
from kemm.knowledge.records import CacheRecord
from kemm.knowledge.store.cache import SourceCache, record_key, sha256_text
from kemm.knowledge.embed.embed import embed_source
from kemm.knowledge.embed.encoder import DEFAULT_ENCODER_ID, default_encoder_path, load_encoder
from kemm.knowledge.embed.store import read_embeddings
from kemm.knowledge.errors import EmbeddingError
from kemm.knowledge.generate.schemas import RefinedReport



def report(i: int, **kw) -> dict:
    d = dict(VALID_REPORT)
    d["key_statements"] = [f"Case {i}: high grade urothelial carcinoma.", f"Case {i}: {i} of 12 nodes positive."]
    d["summary"] = f"Summary of case {i}."
    d.update(kw)
    return RefinedReport.model_validate(d).model_dump(mode="json")


def write_source(cache_dir, source, outputs: dict[str, dict | None]) -> SourceCache:
    sc = SourceCache(cache_dir, source)
    sc.ensure_identity(IDENTITY)
    with sc.writer() as w:
        for cid, out in outputs.items():
            text = f"report of {cid} {json.dumps(out, sort_keys=True)}"
            w.append(CacheRecord(**{"key": record_key(IDENTITY, text), "case_id": cid, "status": "ok" if out else "failed",
                      "input_sha": sha256_text(text), "output": out, "raw_output": "", "errors": [] if out else ["bad"],
                      "attempts": 1, "finish_reason": "stop", "input_meta": {}}))
    return sc


class CountingEncoder:
    """Wraps a real encoder and counts the texts it is asked to encode."""

    def __init__(self, inner):
        self.inner = inner
        self.encoder_id, self.dim = inner.encoder_id, inner.dim
        self.n_encoded = 0

    def identity(self):
        return self.inner.identity()

    def encode(self, texts, batch_size=64):
        self.n_encoded += len(texts)
        return self.inner.encode(texts, batch_size)


@pytest.fixture(scope="module")
def minilm():
    return load_encoder()


def test_default_encoder_dimension_and_determinism(tmp_path, minilm):
    assert default_encoder_path().is_dir()
    assert minilm.encoder_id == DEFAULT_ENCODER_ID and minilm.dim == 384
    outs = {f"TCGA-ZZ-{i:04d}": report(i) for i in range(3)}
    for d in ("a", "b"):
        write_source(tmp_path / d, "src", outs)
        s = embed_source(tmp_path / d, "src", CountingEncoder(minilm), batch_size=4, progress=False)
        assert s.n_encoded == s.n_statements == 9 and s.n_reused == 0
    ea, eb = read_embeddings(tmp_path / "a", "src"), read_embeddings(tmp_path / "b", "src")
    assert ea.dim == 384 and ea.encoder_id == DEFAULT_ENCODER_ID
    for cid in outs:
        assert ea.by_case[cid].shape == (3, 384) and ea.by_case[cid].dtype == np.float32
        np.testing.assert_allclose(ea.by_case[cid], eb.by_case[cid], atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(ea.by_case[cid], axis=1), 1.0, atol=1e-4)  # normalised
    # same statement, same row; the embedding matches a direct encode
    direct = minilm.encode([ea.statements["TCGA-ZZ-0001"][0]])
    np.testing.assert_allclose(ea.by_case["TCGA-ZZ-0001"][0], direct[0], atol=1e-5)


def test_incremental_encodes_only_new_and_changed_records(tmp_path, minilm):
    outs = {f"TCGA-ZZ-{i:04d}": report(i) for i in range(4)}
    write_source(tmp_path, "src", outs)
    enc = CountingEncoder(minilm)
    s1 = embed_source(tmp_path, "src", enc, progress=False)
    assert enc.n_encoded == 12 and s1.n_records == 4
    before = read_embeddings(tmp_path, "src")
    # nothing changed: nothing encoded
    enc2 = CountingEncoder(minilm)
    s2 = embed_source(tmp_path, "src", enc2, progress=False)
    assert enc2.n_encoded == 0 and s2.n_reused == 12
    # two new records and one changed record (new key for an existing case)
    write_source(tmp_path, "src", {"TCGA-ZZ-0100": report(100), "TCGA-ZZ-0101": report(101),
                                   "TCGA-ZZ-0002": report(2, summary="A changed summary of case 2.")})
    enc3 = CountingEncoder(minilm)
    s3 = embed_source(tmp_path, "src", enc3, progress=False)
    assert enc3.n_encoded == 9  # 3 records x 3 statements
    assert s3.n_records == 6 and s3.n_reused == 9 and s3.n_statements == 18
    after = read_embeddings(tmp_path, "src")
    np.testing.assert_array_equal(after.by_case["TCGA-ZZ-0001"], before.by_case["TCGA-ZZ-0001"])
    assert after.statements["TCGA-ZZ-0002"][-1] == "A changed summary of case 2."


def test_read_embeddings_contract(tmp_path):
    outs = {"TCGA-ZZ-0001": report(1), "TCGA-ZZ-0002": report(2), "TCGA-ZZ-0003": None}  # one failure
    write_source(tmp_path, "src", outs)
    enc = HashEncoder()
    s = embed_source(tmp_path, "src", enc, batch_size=2, progress=False)
    assert s.n_records == 2 and s.n_skipped_records == 1
    assert [len(c) for c in enc.calls] == [2, 2, 2]  # batched
    e = read_embeddings(tmp_path, "src")  # the only set: no encoder id needed
    assert (e.source, e.encoder_id, e.dim) == ("src", "hash-enc", 8)
    assert set(e.by_case) == set(e.statements) == {"TCGA-ZZ-0001", "TCGA-ZZ-0002"}
    assert e.statements["TCGA-ZZ-0001"] == RefinedReport.model_validate(outs["TCGA-ZZ-0001"]).statements()
    assert e.by_case["TCGA-ZZ-0001"].shape == (3, 8)
    m = read_embeddings(tmp_path, "src", "hash-enc", mmap=True)
    np.testing.assert_array_equal(np.asarray(m.by_case["TCGA-ZZ-0002"]), e.by_case["TCGA-ZZ-0002"])
    edir = tmp_path / "src" / "embeddings"
    assert {p.name for p in edir.iterdir()} == {"hash-enc.safetensors", "hash-enc.index.json", "hash-enc.manifest.json"}
    man = json.loads((edir / "hash-enc.manifest.json").read_text())
    assert man["encoder"]["weights_sha256"] == "w1" and man["dim"] == 8 and man["n_statements"] == 6
    with pytest.raises(EmbeddingError, match="available: hash-enc"):
        read_embeddings(tmp_path, "src", "other-encoder")
    # a second encoder: None must now pick explicitly
    embed_source(tmp_path, "src", HashEncoder(encoder_id="hash-2"), progress=False)
    with pytest.raises(EmbeddingError, match="several embedding sets"):
        read_embeddings(tmp_path, "src")


def test_encoder_mismatch_refused(tmp_path):
    write_source(tmp_path, "src", {"TCGA-ZZ-0001": report(1)})
    embed_source(tmp_path, "src", HashEncoder(weights="w1"), progress=False)
    other = HashEncoder(weights="w2")  # same id, other weights
    with pytest.raises(EmbeddingError, match="weights_sha256"):
        embed_source(tmp_path, "src", other, progress=False)
    with pytest.raises(EmbeddingError, match="do not match"):
        read_embeddings(tmp_path, "src", expected_identity=other.identity())
    s = embed_source(tmp_path, "src", other, progress=False, rebuild=True)
    assert s.n_encoded == 3
    assert read_embeddings(tmp_path, "src", expected_identity=other.identity()).identity["weights_sha256"] == "w2"


def test_torn_set_detected(tmp_path):
    write_source(tmp_path, "src", {"TCGA-ZZ-0001": report(1)})
    embed_source(tmp_path, "src", HashEncoder(), progress=False)
    idx = tmp_path / "src" / "embeddings" / "hash-enc.index.json"
    d = json.loads(idx.read_text())
    d["generation"] = "other"
    idx.write_text(json.dumps(d))
    with pytest.raises(EmbeddingError, match="inconsistent"):
        read_embeddings(tmp_path, "src")
    # issue 12: the message says to rerun `embed`, and `embed` repairs it (it used to fail the same way)
    s = embed_source(tmp_path, "src", HashEncoder(), progress=False)
    assert s.n_encoded == 3 and read_embeddings(tmp_path, "src").by_case["TCGA-ZZ-0001"].shape == (3, 8)


def test_truncated_safetensors_is_one_line_and_embed_repairs_it(tmp_path):
    """issue 12: a truncated data file gave a raw SafetensorError in embed and in train."""
    write_source(tmp_path, "src", {"TCGA-ZZ-0001": report(1)})
    embed_source(tmp_path, "src", HashEncoder(), progress=False)
    data = tmp_path / "src" / "embeddings" / "hash-enc.safetensors"
    data.write_bytes(data.read_bytes()[:40])
    with pytest.raises(EmbeddingError, match=r"hash-enc.safetensors: .*(truncated|corrupt).*kemm-knowledge embed") as e:
        read_embeddings(tmp_path, "src")
    assert "\n" not in str(e.value)
    s = embed_source(tmp_path, "src", HashEncoder(), progress=False)
    assert s.n_encoded == 3 and read_embeddings(tmp_path, "src").by_case["TCGA-ZZ-0001"].shape == (3, 8)


def test_embed_cli(tmp_path):
    from typer.testing import CliRunner

    from kemm.knowledge.cli import app

    write_source(tmp_path, "src", {"TCGA-ZZ-0001": report(1)})
    r = CliRunner().invoke(app, ["embed", "src", "--cache-dir", str(tmp_path), "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    assert read_embeddings(tmp_path, "src").dim == 384
    r = CliRunner().invoke(app, ["embed", "nope", "--cache-dir", str(tmp_path)])
    assert r.exit_code == 2


def test_embed_takes_the_last_written_record_per_case(tmp_path):
    """Same record per case as SourceCache.by_case / read_outputs: the last-written one, and a
    case whose newest record failed has no report tokens (no stale output of an older input)."""
    from kemm.knowledge.api import read_outputs

    sc = SourceCache(tmp_path, "src")
    sc.ensure_identity(IDENTITY)
    old, new = report(1, summary="Old input."), report(1, summary="Current input.")
    with sc.writer() as w:
        base = {"input_sha": "x", "raw_output": "", "errors": [], "attempts": 1, "finish_reason": "stop", "input_meta": {}}
        # keys chosen so that sorting by key would pick the stale record
        w.append(CacheRecord(**{**base, "key": "k9-old", "case_id": "TCGA-ZZ-0001", "status": "ok", "output": old}))
        w.append(CacheRecord(**{**base, "key": "k1-new", "case_id": "TCGA-ZZ-0001", "status": "ok", "output": new}))
        w.append(CacheRecord(**{**base, "key": "k9-ok", "case_id": "TCGA-ZZ-0002", "status": "ok", "output": report(2)}))
        w.append(CacheRecord(**{**base, "key": "k1-failed", "case_id": "TCGA-ZZ-0002", "status": "failed", "output": None}))
    embed_source(tmp_path, "src", HashEncoder(), progress=False)
    e = read_embeddings(tmp_path, "src")
    assert set(e.by_case) == set(read_outputs(tmp_path, "src")) == {"TCGA-ZZ-0001"}
    assert e.statements["TCGA-ZZ-0001"][-1] == "Current input."


def test_embed_of_unknown_source_fails_before_loading_an_encoder(tmp_path, monkeypatch):
    """issue 12: the source is checked first; loading an encoder takes seconds and says nothing useful."""
    from typer.testing import CliRunner

    import kemm.knowledge.cli.embed as cli_embed
    from kemm.knowledge.cli import app

    def boom(*a, **k):
        raise AssertionError("the encoder was loaded before the source was checked")

    monkeypatch.setattr(cli_embed, "load_encoder", boom)
    r = CliRunner().invoke(app, ["embed", "nosuch", "--cache-dir", str(tmp_path)])
    assert r.exit_code == 2 and "no knowledge source 'nosuch'" in r.output and "Traceback" not in r.output
