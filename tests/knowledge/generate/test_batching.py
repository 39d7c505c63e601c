"""Length-sorted token-budget batches, CPU threads, and greedy equality with batch-of-1."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kemm.knowledge.generate.backends.base import GenerationRequest
from kemm.knowledge.generate.backends.registry import create_backend
from kemm.knowledge.generate.batching import Throughput, cpu_threads, token_budget_batches
from kemm.knowledge.generate.prompts import load_prompt
from kemm.knowledge.generate.schemas import RefinedReport
from llm_fixtures import one_torch_thread, tiny_llm  # noqa: F401 - fixtures


def test_batches_group_similar_lengths_within_the_budget():
    lengths = [500, 5000, 480, 510, 4900, 20]
    b = token_budget_batches(lengths, budget=10_000)
    assert b == [[1, 4], [3, 0, 2, 5]]
    # an over-budget prompt runs alone; max_rows caps the rows
    assert token_budget_batches([9000, 10], budget=100) == [[0], [1]]
    assert token_budget_batches([5, 5, 5], budget=10**6, max_rows=2) == [[0, 1], [2]]
    with pytest.raises(ValueError):
        token_budget_batches([1], budget=0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 6000), max_size=60), st.integers(1, 20000))
def test_batches_cover_every_index_once_and_respect_the_budget(lengths, budget):
    batches = token_budget_batches(lengths, budget)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) == 1 or len(b) * longest <= budget
        assert lengths[b[0]] == longest


def test_cpu_threads(monkeypatch):
    assert cpu_threads(3) == 3
    with pytest.raises(ValueError):
        cpu_threads(0)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr("os.getloadavg", lambda: (2.7, 0, 0))
    assert cpu_threads() == 1  # a busy 2-core box
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr("os.getloadavg", lambda: (0.2, 0, 0))
    assert cpu_threads() == 16


def test_throughput_rates():
    t = Throughput()
    t.add(prompt_tokens=900, padded=1000, output_tokens=200, prefill_s=1.0, total_s=3.0, rows=2)
    d = t.as_dict()
    assert d["prompt_tokens_per_s"] == 900.0 and d["output_tokens_per_s"] == 100.0
    assert d["padding_share"] == 0.1 and d["batches"] == 1


def _requests(n: int, seed: int = 0) -> list[GenerationRequest]:
    rng = random.Random(seed)
    prompt = load_prompt("refine_report", 1)
    words = "invasive urothelial carcinoma high grade pT2a N0 margins negative lymph nodes 0/12 tumor size 3.5 cm".split()
    reqs = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 150)))
        msgs = prompt.render(case_id=f"TCGA-AA-{i:04d}", cancer_type="BLCA", report_text=text)
        reqs.append(GenerationRequest(messages=msgs))
    return reqs


@pytest.mark.slow
def test_greedy_outputs_equal_batch_of_one(tiny_llm, one_torch_thread):  # noqa: F811
    reqs = _requests(6)
    sampling = {"temperature": 0.0, "max_tokens": 48, "seed": 0}
    one = create_backend("transformers", model=str(tiny_llm), device="cpu", threads=1, token_budget=1)
    try:
        ref = one.generate(reqs, RefinedReport, sampling)
        assert one.throughput_stats()["batches"] == 6  # budget 1: every prompt alone
    finally:
        one.close()
    batched = create_backend("transformers", model=str(tiny_llm), device="cpu", threads=1, token_budget=4096)
    try:
        got = batched.generate(reqs, RefinedReport, sampling)
        stats = batched.throughput_stats()
    finally:
        batched.close()
    assert stats["batches"] < 6 and stats["output_tokens"] > 0 and stats["output_tokens_per_s"]
    assert [r.text for r in got] == [r.text for r in ref]
    assert [r.meta["prompt_tokens"] for r in got] == [r.meta["prompt_tokens"] for r in ref]


def test_default_budget_follows_the_prefill():
    from kemm.knowledge.generate.batching import default_token_budget

    # rows prefilled alone on a CPU: the budget sizes only the decode batches, so it is larger
    assert default_token_budget(gpu=False, rows_prefill=True) > default_token_budget(gpu=False, rows_prefill=False)
    assert default_token_budget(gpu=True, rows_prefill=False) == default_token_budget(gpu=True, rows_prefill=True)


def test_backend_budget_default_and_override(tiny_llm):  # noqa: F811
    from kemm.knowledge.generate.batching import default_token_budget

    be = create_backend("transformers", model=str(tiny_llm), device="cpu")
    assert (be.prefill, be.token_budget) == ("rows", default_token_budget(False, True))
    be = create_backend("transformers", model=str(tiny_llm), device="cpu", prefill="batch")
    assert be.token_budget == default_token_budget(False, False)
    be = create_backend("transformers", model=str(tiny_llm), device="cpu", token_budget=100)
    assert be.token_budget == 100
