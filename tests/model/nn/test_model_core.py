"""Core model tests: every registered model under missing modalities, masking, padding
invariance, determinism, streaming (chunked) attention and gradient flow. Small tensors."""

from __future__ import annotations


import pytest
import torch

from kemm.model.nn import kecm as kecm_mod
from kemm.model.nn.kecm import StreamingCrossAttention, masked_softmax
from kemm.model.nn.registry import COMMON_HPARAMS, ModelSpec, build_model, known_models

D_WSI, D_TXT, OMIC = 12, 10, [5, 7, 3]
HP = dict(dim=16, n_heads=2, dropout=0.1)
SPEC = ModelSpec(wsi_dim=D_WSI, omic_dims=OMIC, text_dim=D_TXT, n_bins=4)


def make_batch(
    b: int = 3,
    n: int = 9,
    r: int = 4,
    p: int = 3,
    wsi=None,
    omic=None,
    report=None,
    pbk=None,
    seed: int = 0,
) -> dict:
    """Random batch; ``wsi``/``report``/``pbk`` = valid count per patient, ``omic`` = presence per patient."""
    g = torch.Generator().manual_seed(seed)
    wsi = [n] * b if wsi is None else wsi
    report = [r] * b if report is None else report
    pbk = [p] * b if pbk is None else pbk
    omic = [True] * b if omic is None else omic

    def mask(counts: list[int], width: int) -> torch.Tensor:
        return torch.arange(width)[None, :] < torch.tensor(counts)[:, None]

    return {
        "wsi": torch.randn(b, n, D_WSI, generator=g),
        "wsi_mask": mask(wsi, n),
        "omics": [torch.randn(b, d, generator=g) for d in OMIC],
        "omics_mask": torch.tensor(omic, dtype=torch.bool),
        "report": torch.randn(b, r, D_TXT, generator=g),
        "report_mask": mask(report, r),
        "pbk": torch.randn(b, p, D_TXT, generator=g),
        "pbk_mask": mask(pbk, p),
    }


SCENARIOS = {
    "all_present_b3": dict(b=3),
    "all_present_b1": dict(b=1),
    "empty_bags_n0": dict(b=2, n=0),
    "no_report_r0": dict(b=2, r=0),
    "no_pbk_p0": dict(b=2, p=0),
    "no_text_at_all": dict(b=2, r=0, p=0),
    "no_genomics": dict(b=2, omic=[False, False]),
    "nothing_but_text": dict(b=2, n=0, omic=[False, False]),
    "mixed_b3": dict(b=3, wsi=[9, 0, 4], omic=[True, False, False], report=[4, 0, 1], pbk=[0, 3, 0]),
    "mixed_b1_no_wsi_no_report": dict(b=1, wsi=[0], report=[0]),
}


def _model(name: str, spec: ModelSpec = SPEC, seed: int = 0, **hp):
    torch.manual_seed(seed)
    return build_model(name, spec, **{**HP, **hp})


def _with_padding(batch: dict, extra: int = 5, seed: int = 1) -> dict:
    """Append ``extra`` masked positions with random values to every padded modality."""
    g = torch.Generator().manual_seed(seed)
    out = dict(batch)
    for key, feat in (("wsi", D_WSI), ("report", D_TXT), ("pbk", D_TXT)):
        b = batch[key].shape[0]
        out[key] = torch.cat([batch[key], 100 * torch.randn(b, extra, feat, generator=g)], dim=1)
        out[f"{key}_mask"] = torch.cat([batch[f"{key}_mask"], torch.zeros(b, extra, dtype=torch.bool)], dim=1)
    return out


# -- every model, every missingness pattern -------------------------------------------
@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("name", known_models())
def test_forward_any_missingness(name: str, scenario: str) -> None:
    batch = make_batch(**SCENARIOS[scenario])
    model = _model(name, align_weight=0.5)
    b = batch["wsi_mask"].shape[0]
    for train in (True, False):
        model.train(train)
        out = model(batch)
        assert out["logits"].shape == (b, 4)
        assert torch.isfinite(out["logits"]).all()
        assert out["aux_loss"].ndim == 0 and torch.isfinite(out["aux_loss"])


@pytest.mark.parametrize(
    "name,spec",
    [
        ("kemm", ModelSpec(None, OMIC, D_TXT)),
        ("kemm", ModelSpec(D_WSI, [], D_TXT)),
        ("kemm", ModelSpec(D_WSI, OMIC, None)),
        ("mcat", ModelSpec(None, OMIC, D_TXT)),
        ("mcat", ModelSpec(D_WSI, [], None)),
    ],
)
def test_partial_specs(name: str, spec: ModelSpec) -> None:
    batch = make_batch(b=3, wsi=[9, 0, 2], omic=[True, False, True])
    if not spec.omic_dims:
        batch["omics"] = []
    out = _model(name, spec).eval()(batch)
    assert out["logits"].shape == (3, 4) and torch.isfinite(out["logits"]).all()


def test_spec_missing_required_modality_is_clear() -> None:
    with pytest.raises(ValueError, match="wsi_dim"):
        build_model("abmil", ModelSpec(None, OMIC, D_TXT))
    with pytest.raises(ValueError, match="omic_dims"):
        build_model("snn", ModelSpec(D_WSI, [], D_TXT))


def test_registry_errors_and_common_hparams() -> None:
    with pytest.raises(KeyError, match="abmil"):
        build_model("nope", SPEC)
    with pytest.raises(TypeError, match="unknown hyperparameters"):
        build_model("abmil", SPEC, not_a_param=1)
    common = dict(dim=16, dropout=0.1, n_heads=2, knowledge_dropout=0.2, align_weight=0.1, max_knowledge_tokens=4)
    assert set(common) == set(COMMON_HPARAMS)
    for name in known_models():
        build_model(name, SPEC, **common)


def test_wrong_feature_width_is_named() -> None:
    batch = make_batch()
    batch["wsi"] = torch.randn(3, 9, D_WSI + 1)
    with pytest.raises(ValueError, match="wsi"):
        _model("kemm")(batch)


# -- masking ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", known_models())
def test_padding_does_not_change_outputs(name: str) -> None:
    batch = make_batch(**SCENARIOS["mixed_b3"])
    model = _model(name).eval()
    with torch.no_grad():
        a, b = model(batch)["logits"], model(_with_padding(batch))["logits"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", known_models())
def test_missing_modality_values_are_ignored(name: str) -> None:
    """A fully missing modality contributes nothing: its (garbage) values do not matter."""
    batch = make_batch(b=3, wsi=[0, 5, 9], omic=[True, False, True], report=[0, 2, 4], pbk=[3, 0, 0])
    other = dict(batch)
    other["omics"] = [x.clone() for x in batch["omics"]]
    for x in other["omics"]:
        x[1] = 1e3  # patient 1 has no genomics
    other["wsi"] = batch["wsi"].clone()
    other["wsi"][0] = -1e3  # patient 0 has no slide
    model = _model(name).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch)["logits"], model(other)["logits"], atol=1e-5, rtol=1e-5)


def test_masked_softmax_rules() -> None:
    s = torch.randn(3, 5)
    m = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    w = masked_softmax(s, m)
    assert torch.all(w[~m] == 0)
    torch.testing.assert_close(w.sum(-1), torch.tensor([1.0, 0.0, 1.0]))
    assert w[2, 0] == 1.0


def test_cross_attention_weights_sum_to_one_over_valid_keys() -> None:
    torch.manual_seed(0)
    attn = StreamingCrossAttention(16, 2, chunk_size=3)
    q, k = torch.randn(3, 4, 16), torch.randn(3, 10, 16)
    km = torch.arange(10)[None] < torch.tensor([10, 4, 0])[:, None]
    out, present, w = attn(q, k, km, return_attn=True)
    assert w.shape == (3, 4, 10)
    assert torch.all(w.masked_select(~km[:, None, :].expand_as(w)) == 0)
    torch.testing.assert_close(w[:2].sum(-1), torch.ones(2, 4))
    assert present.tolist() == [True, True, False]
    assert torch.all(out[2] == 0) and torch.all(w[2] == 0)


def test_kemm_attention_maps() -> None:
    batch = make_batch(**SCENARIOS["mixed_b3"])
    model = _model("kemm").eval()
    model.return_attn = True
    with torch.no_grad():
        attn = model(batch)["attn"]
    qm = attn["query_mask"]
    pool = attn["pool"]
    assert torch.all(pool[~qm] == 0)
    torch.testing.assert_close(pool.sum(-1), torch.ones(3))
    wsi = attn["wsi"]  # [B, Q, N]; patient 1 has no slide
    assert torch.all(wsi[1] == 0)
    torch.testing.assert_close(wsi[[0, 2]].sum(-1), torch.ones(2, qm.shape[1]))
    assert torch.all(wsi[2, :, 4:] == 0)


def test_fallback_to_learned_queries_without_knowledge() -> None:
    batch = make_batch(b=2, report=[0, 2], pbk=[0, 3])
    model = _model("kemm").eval()
    with torch.no_grad():
        qm = model(batch)["attn"]["query_mask"]
    n_learned = model.queries.shape[0]
    assert qm[0, -n_learned:].all() and not qm[0, :-n_learned].any()
    assert not qm[1, -n_learned:].any() and qm[1, :-n_learned].sum() == 5


def test_max_knowledge_tokens_keeps_valid_tokens_first() -> None:
    batch = make_batch(b=2, r=6, p=4, report=[1, 6], pbk=[4, 0])
    model = _model("kemm", max_knowledge_tokens=5).eval()
    with torch.no_grad():
        qm = model(batch)["attn"]["query_mask"]
    n_learned = model.queries.shape[0]
    assert qm[:, :-n_learned].shape[1] == 5
    assert qm[0, :5].all() and qm[1, :5].all()  # patient 0: 1 report + 4 PBK; patient 1: 5 of 6 reports


def test_knowledge_dropout_only_in_training() -> None:
    batch = make_batch(b=3)
    model = _model("kemm_report", knowledge_dropout=0.99)
    model.train()
    torch.manual_seed(3)
    qm = model(batch)["attn"]["query_mask"]
    n_learned = model.queries.shape[0]
    assert qm[:, -n_learned:].all(dim=1).sum() >= 1  # reports dropped -> fallback queries used
    model.eval()
    qm = model(batch)["attn"]["query_mask"]
    assert not qm[:, -n_learned:].any()


# -- determinism and streaming ------------------------------------------------------------
@pytest.mark.parametrize("name", ["kemm", "mcat", "abmil"])
def test_determinism_with_seed(name: str) -> None:
    batch = make_batch(**SCENARIOS["mixed_b3"])
    outs = []
    for _ in range(2):
        model = _model(name, seed=7).train()
        torch.manual_seed(11)
        outs.append(model(batch)["logits"])
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)


@pytest.mark.parametrize("checkpoint_chunks", [False, True])
def test_chunked_equals_unchunked(checkpoint_chunks: bool) -> None:
    torch.manual_seed(0)
    ref = StreamingCrossAttention(16, 4, chunk_size=None)
    chk = StreamingCrossAttention(16, 4, chunk_size=7, checkpoint_chunks=checkpoint_chunks)
    chk.load_state_dict(ref.state_dict())
    enc = torch.nn.Linear(12, 16)
    q0, k0 = torch.randn(3, 5, 16), 3 * torch.randn(3, 40, 12)
    km = torch.arange(40)[None] < torch.tensor([40, 13, 0])[:, None]
    km[0, 20:27] = False  # a fully masked chunk in the middle
    results = []
    for mod in (ref, chk):
        q, k = q0.clone().requires_grad_(), k0.clone().requires_grad_()
        out, _, _ = mod(q, k, km, key_encoder=enc)
        (out.square().sum()).backward()
        grads = [q.grad, k.grad] + [p.grad.clone() for p in (*mod.parameters(), *enc.parameters())]
        enc.zero_grad()
        results.append((out.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    for g_ref, g_chk in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g_ref, g_chk, atol=1e-5, rtol=1e-5)


def test_kemm_chunk_size_does_not_change_outputs() -> None:
    batch = make_batch(**SCENARIOS["mixed_b3"])
    a = _model("kemm", chunk_size=None).eval()
    b = _model("kemm", chunk_size=2).eval()
    with torch.no_grad():
        torch.testing.assert_close(a(batch)["logits"], b(batch)["logits"], atol=1e-5, rtol=1e-5)


def test_100k_patches_streams_in_chunks(monkeypatch) -> None:
    seen: list[int] = []
    orig = kecm_mod.StreamingCrossAttention._chunk_stats

    def spy(self, q, x, mask, key_encoder):
        if self is model.kecm.wsi_attn:
            seen.append(x.shape[1])
        return orig(self, q, x, mask, key_encoder)

    monkeypatch.setattr(kecm_mod.StreamingCrossAttention, "_chunk_stats", spy)
    spec = ModelSpec(wsi_dim=64, omic_dims=[5], text_dim=D_TXT)
    model = build_model("kemm", spec, dim=32, n_heads=4, chunk_size=4096).eval()
    n = 100_000
    batch = make_batch(b=1, n=0, r=4, p=3)
    batch["wsi"] = torch.randn(1, n, 64)
    batch["wsi_mask"] = torch.ones(1, n, dtype=torch.bool)
    batch["omics"] = [torch.randn(1, 5)]
    with torch.no_grad():
        out = model(batch)
    assert torch.isfinite(out["logits"]).all()
    assert sum(seen) == n and max(seen) <= 4096  # WSI attention never saw more than one chunk
    # Streaming is exact: one chunk holding every patch gives the same logits.
    monkeypatch.setattr(kecm_mod.StreamingCrossAttention, "_chunk_stats", orig)
    for m in model.modules():
        if isinstance(m, kecm_mod.StreamingCrossAttention):
            m.chunk_size = n
    with torch.no_grad():
        whole = model(batch)
    torch.testing.assert_close(out["logits"], whole["logits"], rtol=1e-4, atol=1e-5)


# -- gradients ---------------------------------------------------------------------------
def _loss(out: dict) -> torch.Tensor:
    return out["logits"].square().sum() + out["aux_loss"]


@pytest.mark.parametrize("name", known_models())
def test_gradient_reaches_every_parameter(name: str) -> None:
    # mixed batch so every branch (incl. fallback queries, MIL fallback in mcat) is used;
    # patients 0 and 3 have every modality so the alignment loss has >= 2 pairs.
    batch = make_batch(b=4, wsi=[9, 0, 4, 5], omic=[True, False, False, True], report=[4, 0, 1, 2], pbk=[0, 0, 2, 1])
    model = _model(name, align_weight=0.5, knowledge_dropout=0.0).train()
    _loss(model(batch)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no/invalid gradient for {missing}"
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, f"zero gradient for {zero}"


def test_alignment_loss_is_positive_and_differentiable() -> None:
    batch = make_batch(b=4)
    model = _model("kemm", align_weight=1.0, knowledge_dropout=0.0).train()
    out = model(batch)
    assert out["aux_loss"] > 0
    out["aux_loss"].backward()
    assert model.align_text.weight.grad.abs().sum() > 0
