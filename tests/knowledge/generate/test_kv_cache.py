"""The reserved KV cache and row-by-row prefill: the same greedy tokens as transformers' own path."""
from __future__ import annotations

import pytest

from kemm.knowledge.generate.backends.base import GenerationRequest
from kemm.knowledge.generate.backends.registry import create_backend
from kemm.knowledge.generate.prompts import load_prompt
from kemm.knowledge.generate.schemas import RefinedReport
from llm_fixtures import one_torch_thread, tiny_llm  # noqa: F401 - fixtures

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from kemm.knowledge.generate.backends.kv_cache import cache_classes, cache_kwarg, reserved_cache  # noqa: E402

ReservedCache = cache_classes()[1]


def _greedy(model, enc, cache, n=24):
    with torch.inference_mode():
        return model.generate(**enc, **{cache_kwarg(model): cache}, max_new_tokens=n, do_sample=False,
                              pad_token_id=0, eos_token_id=[10**6])


@pytest.mark.parametrize("reserve", [None, 7, 10_000])  # None: the default cache; 7 forces growth
def test_reserved_cache_gives_the_same_greedy_tokens(tiny_llm, one_torch_thread, reserve):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny_llm).eval()
    # two rows of different lengths: left padding and its mask go through the cache too
    enc = tok(["Invasive urothelial carcinoma, high grade, pT2a N0.", "pT1c"], return_tensors="pt", padding=True)
    reference = _greedy(model, enc, None)
    cache = None if reserve is None else ReservedCache(model.config.num_hidden_layers, reserve)
    out = _greedy(model, enc, cache)
    assert torch.equal(out, reference)
    if cache is not None:
        n = enc["input_ids"].shape[1] + 24 - 1  # the last token is never fed back
        layer = cache.layers[0]
        assert layer.keys.shape[-2] == n
        assert layer._k.shape[-2] >= n  # noqa: SLF001 - the reservation holds what was written
        if reserve == 10_000:
            assert layer._k.shape[-2] == 10_000  # noqa: SLF001 - reserved once, never regrown


def _backend_texts(tiny_llm, sentence: str, growth: int, **options) -> list[str]:  # noqa: F811
    """Greedy texts of 3 prompts of different lengths, one backend batch (the rows decode together);
    the backend reports the options it ran with."""
    prompt = load_prompt("refine_report", 1)
    reqs = [GenerationRequest(messages=prompt.render(case_id=f"TCGA-AA-000{i}", cancer_type="BLCA",
                                                     report_text=sentence * (growth * i + 1))) for i in range(3)]
    be = create_backend("transformers", model=str(tiny_llm), device="cpu", **options)
    try:
        assert all(be.describe()[k] == v for k, v in options.items())
        res = be.generate(reqs, RefinedReport, {"temperature": 0.0, "max_tokens": 40})
        assert {r.meta["batch_rows"] for r in res} == {3}
        return [r.text for r in res]
    finally:
        be.close()


@pytest.mark.parametrize("reserve_new", [512, 3])  # 3: the cache regrows while decoding
def test_backend_outputs_equal_with_either_cache(tiny_llm, one_torch_thread, monkeypatch, reserve_new):  # noqa: F811
    from kemm.knowledge.generate.backends import transformers as tb

    monkeypatch.setattr(tb, "RESERVE_NEW_TOKENS", reserve_new)
    texts = {kv: _backend_texts(tiny_llm, "Invasive urothelial carcinoma, pT2a N0. ", 1, kv_cache=kv)
             for kv in ("dynamic", "reserved")}
    assert texts["reserved"] == texts["dynamic"]


def test_reserved_cache_only_for_plain_full_attention():
    from transformers import LlamaConfig, MistralConfig

    assert isinstance(reserved_cache(LlamaConfig(num_hidden_layers=3), 16), ReservedCache)
    assert len(reserved_cache(LlamaConfig(num_hidden_layers=3), 16).layers) == 3
    assert reserved_cache(MistralConfig(sliding_window=4096), 16) is None
    assert isinstance(reserved_cache(MistralConfig(sliding_window=None), 16), ReservedCache)


def test_unknown_kv_cache_option_is_refused(tiny_llm):  # noqa: F811
    from kemm.knowledge.generate.backends.base import BackendError

    with pytest.raises(BackendError, match="kv_cache 'static'"):
        create_backend("transformers", model=str(tiny_llm), device="cpu", kv_cache="static")
    with pytest.raises(BackendError, match="prefill 'chunked'"):
        create_backend("transformers", model=str(tiny_llm), device="cpu", prefill="chunked")


def test_rows_prefilled_alone_decode_as_one_padded_batch(tiny_llm, one_torch_thread):  # noqa: F811
    """prefill_rows lays each row's cache out as a left-padded batch would: same greedy tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kemm.knowledge.generate.backends.kv_cache import prefill_rows

    tok = AutoTokenizer.from_pretrained(tiny_llm, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny_llm).eval()
    texts = ["Invasive urothelial carcinoma, high grade, pT2a N0. Margins negative.", "pT1c", "Lung adenocarcinoma"]
    enc = tok(texts, return_tensors="pt", padding=True)
    ids = [tok(t)["input_ids"] for t in texts]
    longest = max(len(x) for x in ids)
    cache = prefill_rows(model, ids, longest + 24)
    layer = cache.layers[0]
    assert layer.keys.shape[0] == 3 and layer.keys.shape[-2] == longest - 1
    # padded positions hold zeros; each row's own keys end where its prompt ends
    short = ids.index(min(ids, key=len))
    assert torch.count_nonzero(layer.keys[short, :, : longest - len(ids[short])]) == 0
    assert torch.count_nonzero(layer.keys[short, :, longest - len(ids[short]) :]) > 0
    out = _greedy(model, enc, cache)
    reference = _greedy(model, enc, None)
    assert torch.equal(out, reference)


def test_backend_prefill_rows_equals_batch_prefill(tiny_llm, one_torch_thread):  # noqa: F811
    texts = {p: _backend_texts(tiny_llm, "pT2a N0, margins negative. ", 3, prefill=p) for p in ("batch", "rows")}
    assert texts["rows"] == texts["batch"]


def test_rows_prefill_needs_the_reserved_cache(tiny_llm):  # noqa: F811
    from kemm.knowledge.generate.backends.base import BackendError

    assert create_backend("transformers", model=str(tiny_llm), device="cpu", kv_cache="dynamic").prefill == "batch"
    with pytest.raises(BackendError, match="prefill 'rows'"):
        create_backend("transformers", model=str(tiny_llm), device="cpu", kv_cache="dynamic", prefill="rows")


def test_crop_and_batch_selection_keep_the_cache_usable():
    """transformers' own crop / batch selection run, and the next update writes after what they kept."""
    layer = cache_classes()[0](reserve=8)
    k = torch.arange(2 * 1 * 5 * 2, dtype=torch.float32).reshape(2, 1, 5, 2)
    layer.update(k, k.clone())
    layer.crop(-2)
    assert layer.get_seq_length() == 3 and torch.equal(layer.keys, k[..., :3, :])
    layer.batch_select_indices(torch.tensor([1]))
    new = torch.full((1, 1, 1, 2), -1.0)
    keys, _ = layer.update(new, new.clone())
    assert torch.equal(keys, torch.cat([k[1:, :, :3, :], new], dim=-2))
