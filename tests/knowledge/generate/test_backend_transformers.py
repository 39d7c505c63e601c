"""The ``transformers`` backend end to end on a tiny random Llama, plus the grammar helpers.

The model writes meaningless text; xgrammar keeps it inside the schema, so
every record must come out schema-valid (status ok) for both tasks.
"""
from __future__ import annotations

import json

import pytest

from kemm.knowledge.generate.backends.base import BackendError
from kemm.knowledge.generate.backends.registry import create_backend
from kemm.knowledge.generate.backends.grammar import (
    decoder_schema,
    expand_small_repeats,
    pattern_too_long,
    tighten_strings,
)
from kemm.knowledge.generate.backends.transformers import generation_kwargs
from kemm.knowledge.store.cache import SourceCache
from kemm.knowledge.generate.schemas import PrognosticKnowledge, RefinedReport
from llm_fixtures import one_torch_thread, tiny_llm, write_short_reports  # noqa: F401  (fixtures)

pytest.importorskip("xgrammar")
pytest.importorskip("transformers")

# Greedy decoding of a random model fills strings towards maxLength: leave room.
MAX_TOKENS = "max_tokens=3000"


def _cli(args):
    from typer.testing import CliRunner

    from kemm.knowledge.cli import app

    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


@pytest.mark.slow
def test_build_both_tasks_with_tiny_llama(tiny_llm, tmp_path, monkeypatch, one_torch_thread):  # noqa: F811
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "cache"
    reports = write_short_reports(tmp_path / "reports.csv")
    common = ["--backend", "transformers", "--model", str(tiny_llm), "--device", "cpu",
              "--sampling", MAX_TOKENS, "--cache-dir", str(cache)]
    _cli(["build", "refine_report", "--reports", str(reports), "--source", "rr-tiny", *common])
    _cli(["build", "pbk", "--cancer-types", "BLCA,LUAD", "--source", "pbk-tiny", *common])

    for source, schema, n in (("rr-tiny", RefinedReport, 3), ("pbk-tiny", PrognosticKnowledge, 2)):
        sc = SourceCache(cache, source)
        recs = sc.by_case()
        assert len(recs) == n
        for case, rec in recs.items():
            assert rec.status == "ok", (case, rec.errors, rec.raw_output[:300])
            assert rec.finish_reason == "stop"
            schema.model_validate(rec.output)
            # strict JSON: the tightened grammar admits no raw control characters
            json.loads(rec.raw_output)
            assert rec.meta["generation_config"]["max_new_tokens"] == 3000
        desc = sc.read_manifest()["provenance"]["backend_description"]
        assert desc["device"] == "cpu" and desc["dtype"] == "float32"
        assert desc["model_revision"].startswith("local-")
        assert desc["libraries"]["xgrammar"]

    # A rebuild with nothing changed generates nothing.
    res = _cli(["build", "pbk", "--cancer-types", "BLCA,LUAD", "--source", "pbk-tiny", *common])
    summary_row = [ln for ln in res.output.splitlines() if "│" in ln][-1]
    assert [c.strip() for c in summary_row.split("│") if c.strip()][:6] == ["2", "2", "0", "0", "2", "0"]


def test_truncation_reports_length(tiny_llm, one_torch_thread):  # noqa: F811
    from kemm.knowledge.generate.backends.base import GenerationRequest

    be = create_backend("transformers", model=str(tiny_llm), device="cpu")
    try:
        req = GenerationRequest(messages=[{"role": "system", "content": "JSON"}, {"role": "user", "content": "BLCA"}])
        res = be.generate([req, req], PrognosticKnowledge, {"temperature": 0.0, "max_tokens": 8})
    finally:
        be.close()
    assert [r.finish_reason for r in res] == ["length", "length"]
    assert all(r.text.startswith('{"c') and r.meta["completion_tokens"] == 8 for r in res), [r.text for r in res]


def test_sampling_maps_to_a_complete_generation_config():
    greedy = generation_kwargs({"temperature": 0.0, "max_tokens": 64, "seed": 0}, [2, 7], 3)
    assert greedy == {"max_new_tokens": 64, "do_sample": False, "num_beams": 1, "repetition_penalty": 1.0,
                      "eos_token_id": [2, 7], "pad_token_id": 3}
    sampled = generation_kwargs({"temperature": 0.7, "top_p": 0.9}, [2], 2)
    assert sampled["do_sample"] and sampled["temperature"] == 0.7 and sampled["top_p"] == 0.9
    assert sampled["top_k"] == 0  # not the checkpoint's default top_k


def test_backend_errors_name_the_problem(tmp_path, tiny_llm):  # noqa: F811
    with pytest.raises(BackendError, match="needs --model"):
        create_backend("transformers")
    with pytest.raises(BackendError, match="is not a directory"):
        create_backend("transformers", model=str(tmp_path / "nope"))
    with pytest.raises(BackendError, match="does not use --base-url"):
        create_backend("transformers", model=str(tiny_llm), base_url="http://x")
    with pytest.raises(BackendError, match="unknown sampling"):
        from kemm.knowledge.generate.backends.base import GenerationRequest

        be = create_backend("transformers", model=str(tiny_llm))
        be.generate([GenerationRequest(messages=[{"role": "user", "content": "x"}])], RefinedReport,
                    {"temprature": 0})


def test_decoder_schema_is_a_tightened_copy():
    js = decoder_schema(RefinedReport)
    assert RefinedReport.model_json_schema()["properties"]["tumor_size"]["pattern"] != js["properties"][
        "tumor_size"]["pattern"]
    assert "{" not in js["properties"]["tumor_size"]["pattern"]
    ints = [b for b in js["properties"]["nodes_positive"]["anyOf"] if b.get("type") == "integer"]
    assert ints[0]["maximum"] == 999_999_999
    assert list(js["properties"])[:3] == ["histologic_type", "grade", "pT"]  # field order kept


def test_pattern_helpers():
    assert expand_small_repeats(r"^[0-9]{1,3}(\.[0-9]{1,2})? cm$") == r"^[0-9][0-9]?[0-9]?(\.[0-9][0-9]?)? cm$"
    assert expand_small_repeats(r"^[A-Z]{2}$") == r"^[A-Z][A-Z]$"
    assert expand_small_repeats(r"(ab){1,2}x{1,200}") == r"(ab){1,2}x{1,200}"
    assert pattern_too_long(r"^[a-z]{1,300}$") and not pattern_too_long(r"^[a-z]{1,128}$")
    assert decoder_schema({"type": "string", "pattern": "^.{0,500}$", "maxLength": 500}) == {
        "type": "string", "maxLength": 500}
    assert tighten_strings('r ::= [^\\"\\\\\\r\\n]') == 'r ::= [^\\0-\\x1f\\"\\\\]'


def test_compiled_grammar_rejects_what_xgrammar_alone_lets_through():
    xgr = pytest.importorskip("xgrammar")
    from kemm.knowledge.generate.backends.grammar import compile_xgrammar

    vocab = [bytes([i]).decode("latin-1") for i in range(256)]
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo(vocab, stop_token_ids=[0]))
    g = compile_xgrammar(compiler, RefinedReport)

    def accepts(s: str) -> bool:
        return xgr.GrammarMatcher(g).accept_string(s)

    head = '{"histologic_type": "urothelial carcinoma", "grade": "G2", "pT": "T2a", "pN": "N0", ' \
           '"pM": "M0", "stage_group": "II", "tumor_size": '
    assert accepts(head + '"3.5 cm"')
    assert not accepts(head + '"5888 mm"')  # xgrammar 0.2.8 alone accepts this
    assert not accepts('{"histologic_type": "a\tb')  # raw control character
    assert not accepts('{ "histologic_type"')  # no free whitespace
