from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fakes import VALID_REPORT, ScriptedBackend, write_reports_csv
from kemm.knowledge.records import CacheRecord
from kemm.knowledge.generate.build import build
from kemm.knowledge.store.cache import CacheError, SourceCache, identity_sha, record_key
from kemm.knowledge.store.inputs import InputError, read_reports
from kemm.knowledge.generate.prompts import load_prompt
from kemm.knowledge.generate.repair import extract_json, generate_validated
from kemm.knowledge.generate.backends.base import BackendError, GenerationRequest
from kemm.knowledge.generate.backends.registry import create_backend
from kemm.knowledge.generate.schemas import RefinedReport

REPO = Path(__file__).resolve().parents[3]


def _inputs(tmp_path, n=5):
    f = tmp_path / "reports.csv"
    write_reports_csv(f, n)
    return read_reports(f, cancer_type="BLCA")


def test_build_then_rebuild_generates_nothing(tmp_path):
    p = load_prompt("refine_report")
    be = ScriptedBackend()
    cache = SourceCache(tmp_path / "kc", "s1")
    s1 = build(p, _inputs(tmp_path), be, cache, batch_size=2)
    assert (s1.ok, s1.generated, s1.cached) == (5, 5, 0)
    be2 = ScriptedBackend()
    s2 = build(p, _inputs(tmp_path), be2, cache)
    assert (s2.ok, s2.generated, s2.cached) == (5, 0, 5) and be2.n_generated == 0
    man = cache.read_manifest()
    assert man["identity"]["prompt_sha"] == p.sha256 and man["counts"]["ok"] == 5
    assert man["identity"]["model_id"] == "scripted-1" and man["identity"]["sampling"]["temperature"] == 0.0
    line = json.loads(cache.records_path.read_text(encoding="utf-8").splitlines()[0])
    assert list(line) == ["key", "case_id", "status", "input_sha", "rendered_prompt_sha", "raw_output", "output", "errors",
                          "attempts", "finish_reason", "latency_s", "input_meta", "created", "meta", "identity_sha"]
    assert line["identity_sha"] == identity_sha(man["identity"])  # issue 12 item 7: records carry their identity
    assert line["status"] == "ok" and line["attempts"] == 1
    assert line["output"] == RefinedReport.model_validate(VALID_REPORT).model_dump(mode="json")


def test_new_inputs_only_are_generated(tmp_path):
    p = load_prompt("refine_report")
    cache = SourceCache(tmp_path / "kc", "s1")
    build(p, _inputs(tmp_path, 3), ScriptedBackend(), cache)
    be = ScriptedBackend()
    s = build(p, _inputs(tmp_path, 5), be, cache)
    assert s.generated == 2 and s.cached == 3 and sorted(sum(be.calls, [])) == ["TCGA-ZZ-0003", "TCGA-ZZ-0004"]


def test_repair_loop_retries_with_feedback_then_ok(tmp_path):
    bad = json.dumps({**VALID_REPORT, "pT": "stage two"})
    be = ScriptedBackend({"TCGA-ZZ-0000": [bad, json.dumps(VALID_REPORT)]})
    p = load_prompt("refine_report")
    cache = SourceCache(tmp_path / "kc", "s1")
    s = build(p, _inputs(tmp_path, 2), be, cache)
    assert s.ok == 2 and s.failed == 0
    rec = cache.by_case()["TCGA-ZZ-0000"]
    assert rec.attempts == 2 and any("pT" in e for e in rec.errors)
    retry_msgs = [m for m in be.seen_messages if len(m) == 4]
    assert retry_msgs and retry_msgs[0][2] == {"role": "assistant", "content": bad}
    assert "pT" in retry_msgs[0][3]["content"]


class _TruncatingBackend:
    """Cuts every output that needs more than ``needs`` tokens (one token per character here)."""

    name = "truncating"

    def __init__(self, needs: int):
        self.needs, self.calls = needs, []

    def generate(self, requests, schema, sampling):
        from kemm.knowledge.generate.backends.base import GenerationResult

        self.calls.append((sampling["max_tokens"], [r.messages for r in requests]))
        full = json.dumps(VALID_REPORT)
        if sampling["max_tokens"] >= self.needs:
            return [GenerationResult(text=full, finish_reason="stop") for _ in requests]
        return [GenerationResult(text=full[: sampling["max_tokens"] // 8], finish_reason="length") for _ in requests]


def test_a_truncated_output_is_asked_again_with_twice_the_tokens_not_fed_back():
    msgs = [[{"role": "user", "content": "report A"}], [{"role": "user", "content": "report B"}]]
    reqs = [GenerationRequest(messages=m) for m in msgs]
    be = _TruncatingBackend(needs=2048)
    outs = generate_validated(be, reqs, RefinedReport, {"max_tokens": 1024, "temperature": 0.0}, max_attempts=3)
    assert [o.status for o in outs] == ["ok", "ok"] and [o.attempts for o in outs] == [2, 2]
    assert [c[0] for c in be.calls] == [1024, 2048]
    assert be.calls[1][1] == msgs  # the original conversations: the cut-off text is not fed back
    assert "asked again with max_tokens=2048" in outs[0].errors[-1]
    # the growth is bounded: 4x the configured limit at most; then it fails at once, never the same call again
    be = _TruncatingBackend(needs=10**6)
    (o,) = generate_validated(be, reqs[:1], RefinedReport, {"max_tokens": 256}, max_attempts=5)
    assert o.status == "failed" and [c[0] for c in be.calls] == [256, 512, 1024] and o.attempts == 3
    assert o.errors[-1].endswith("raise max_tokens")
    # the last allowed attempt does not claim a retry
    be = _TruncatingBackend(needs=10**6)
    (o,) = generate_validated(be, reqs[:1], RefinedReport, {"max_tokens": 256}, max_attempts=1)
    assert [c[0] for c in be.calls] == [256] and o.errors[-1].endswith("raise max_tokens")


def test_always_invalid_becomes_failure_and_is_not_a_cache_hit(tmp_path):
    be = ScriptedBackend({"TCGA-ZZ-0001": ["not json at all"]})
    p = load_prompt("refine_report")
    cache = SourceCache(tmp_path / "kc", "s1")
    s = build(p, _inputs(tmp_path, 3), be, cache, max_attempts=3)
    assert (s.ok, s.failed) == (2, 1)
    rec = cache.by_case()["TCGA-ZZ-0001"]
    assert rec.status == "failed" and rec.raw_output == "not json at all" and rec.attempts == 3
    # failures are regenerated on the next build, never served from the cache
    be2 = ScriptedBackend()
    s2 = build(p, _inputs(tmp_path, 3), be2, cache)
    assert s2.generated == 1 and s2.ok == 3 and be2.calls == [["TCGA-ZZ-0001"]]


def test_backend_exception_fails_batch_records_not_build(tmp_path):
    class Boom(ScriptedBackend):
        def generate(self, requests, schema, sampling):
            raise RuntimeError("CUDA out of memory")

    reqs = [GenerationRequest(messages=[{"role": "user", "content": "x"}], inputs={"case_id": "a"})]
    out = generate_validated(Boom(), reqs, RefinedReport, {}, max_attempts=2)
    assert out[0].status == "failed" and "CUDA out of memory" in out[0].errors[-1]


def test_extract_json_is_lenient():
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('Here it is: {"a": "x\ny"} thanks') == {"a": "x\ny"}
    with pytest.raises(ValueError):
        extract_json("nothing")


def test_changed_prompt_or_model_is_refused(tmp_path):
    p = load_prompt("refine_report", 1)
    cache = SourceCache(tmp_path / "kc", "s1")
    build(p, _inputs(tmp_path, 2), ScriptedBackend(), cache)
    with pytest.raises(CacheError, match="(?s)model_id.*new --source"):
        build(p, _inputs(tmp_path, 2), ScriptedBackend(model_id="other"), cache)
    # a prompt edit changes the prompt sha, hence every key, and is refused in the old source
    d = tmp_path / "prompts" / "refine_report"
    d.mkdir(parents=True)
    (d / "v1.jinja").write_text(p.path.read_text() + "\n{# edited #}\n")
    p2 = load_prompt("refine_report", 1, tmp_path / "prompts")
    assert p2.sha256 != p.sha256
    ident = {"task": "refine_report", "prompt_sha": p.sha256}
    assert record_key(ident, "t") != record_key({**ident, "prompt_sha": p2.sha256}, "t")
    with pytest.raises(CacheError, match="prompt_sha"):
        build(p2, _inputs(tmp_path, 2), ScriptedBackend(), cache)
    s = build(p2, _inputs(tmp_path, 2), ScriptedBackend(), SourceCache(tmp_path / "kc", "s2"))
    assert s.ok == 2


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".hidden", "", "x" * 200, "/abs"])
def test_source_names_cannot_escape_cache(tmp_path, name):
    with pytest.raises(CacheError, match="invalid source name"):
        SourceCache(tmp_path / "kc", name)


def test_case_id_cannot_write_outside(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps({"id": "../../etc/passwd", "text": "Invasive carcinoma pT2 N0, margins negative. " * 3}) + "\n")
    inputs = read_reports(f, id_column="id", text_column="text", cancer_type="BLCA")
    cache = SourceCache(tmp_path / "kc", "s1")
    build(load_prompt("refine_report"), inputs, ScriptedBackend(), cache)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["kc/s1/.lock", "kc/s1/manifest.json", "kc/s1/records.jsonl", "r.jsonl"]


def test_corrupted_line_is_reported_and_regenerated(tmp_path):
    p = load_prompt("refine_report")
    cache = SourceCache(tmp_path / "kc", "s1")
    build(p, _inputs(tmp_path, 3), ScriptedBackend(), cache)
    lines = cache.records_path.read_text().splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + "\n"  # corrupt the 2nd record
    cache.records_path.write_text("".join(lines))
    rep = cache.load()
    assert rep.corrupt_lines == [2] and len(rep.records) == 2
    be = ScriptedBackend()
    s = build(p, _inputs(tmp_path, 3), be, cache)
    assert s.corrupt_lines == 1 and s.generated == 1 and len(cache.by_case()) == 3


def test_skipped_inputs_are_recorded(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("pdf_file_name_path,ocr_text\nTCGA-AA-0001.X.PDF,\nTCGA-AA-0002.X.PDF,short\nTCGA-AA-0003.X.PDF," + "carcinoma " * 10 + "\n")
    cache = SourceCache(tmp_path / "kc", "s1")
    s = build(load_prompt("refine_report"), read_reports(f), ScriptedBackend(), cache)
    assert (s.ok, s.skipped) == (1, 2)
    rec = cache.by_case()["TCGA-AA-0001"]
    assert rec.status == "skipped" and "nothing to refine" in rec.errors[0]


def test_same_text_for_two_patients_gives_two_records(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("pdf_file_name_path,ocr_text\nTCGA-AA-0001.A.PDF,\nTCGA-AA-0002.B.PDF,\n" +
                 "TCGA-AA-0003.A.PDF," + "same text " * 10 + "\nTCGA-AA-0004.A.PDF," + "same text " * 10 + "\n")
    cache = SourceCache(tmp_path / "kc", "s1")
    s = build(load_prompt("refine_report"), read_reports(f), ScriptedBackend(), cache)
    assert (s.ok, s.skipped) == (2, 2) and sorted(cache.by_case()) == [f"TCGA-AA-000{i}" for i in range(1, 5)]


def test_several_reports_of_one_patient_are_joined(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("pdf_file_name_path,ocr_text\nTCGA-AA-0001.A.PDF,first report text\nTCGA-AA-0001.B.PDF,second report text\n")
    (inp,) = read_reports(f, min_chars=5)
    assert "first report text" in inp.variables["report_text"] and "second report text" in inp.variables["report_text"]
    assert inp.meta["n_reports"] == 2


def test_input_errors_name_file_row_and_column(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("pdf_file_name_path,ocr_text\nnot-a-barcode.PDF,text\n")
    (bad,) = read_reports(f)
    assert re.search(r"r\.csv: row 2: 'pdf_file_name_path' = 'not-a-barcode.PDF'.*TCGA-XX-XXXX", bad.skip_reason)
    with pytest.raises(InputError, match=r"no column 'report'.*--text-column"):
        read_reports(f, text_column="report")
    g = tmp_path / "r.jsonl"
    g.write_text('{"id": 1}\n{bad\n')
    with pytest.raises(InputError, match=r"r\.jsonl:2"):
        read_reports(g, id_column="id", text_column="t")


def test_unknown_backend_lists_known():
    with pytest.raises(BackendError, match="known backends: .*rules"):
        create_backend("nope")


SLOW_BUILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from fakes import ScriptedBackend
    from kemm.knowledge.generate.build import build
    from kemm.knowledge.store.cache import SourceCache
    from kemm.knowledge.store.inputs import read_reports
    from kemm.knowledge.generate.prompts import load_prompt
    build(load_prompt("refine_report"), read_reports({reports!r}, cancer_type="BLCA"),
          ScriptedBackend(delay=0.05), SourceCache({kc!r}, "s1"), batch_size=1)
    """
)


def test_sigkill_mid_build_resumes_without_loss_or_duplicates(tmp_path):
    reports = tmp_path / "r.csv"
    write_reports_csv(reports, 40)
    script = tmp_path / "slow.py"
    script.write_text(SLOW_BUILD.format(tests=str(Path(__file__).resolve().parents[2]), reports=str(reports), kc=str(tmp_path / "kc")))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO)
    cache = SourceCache(tmp_path / "kc", "s1")
    deadline = time.time() + 60
    while time.time() < deadline:
        if cache.records_path.exists() and len(cache.load().records) >= 8:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = set(cache.by_case())
    assert 8 <= len(done_before) < 40, "the build should have been killed midway"
    be = ScriptedBackend()
    s = build(load_prompt("refine_report"), read_reports(reports, cancer_type="BLCA"), be, cache)
    regenerated = set(sum(be.calls, []))
    assert not (regenerated & done_before), "finished records were generated again"
    assert s.ok == 40 and s.cached == len(done_before)
    rep = cache.load()
    assert len(rep.records) == 40 and not rep.corrupt_lines
    keys = [json.loads(l)["key"] for l in cache.records_path.read_text().splitlines() if l.strip()]
    assert len(keys) == len(set(keys)) == 40


def test_by_case_serves_the_newest_record_when_a_key_is_rewritten(tmp_path):
    """A case whose input changed (K1 -> K2) and changed back (K1 again, regenerated after a
    failure) must be served K1's newest record, not K2's stale one."""
    cache = SourceCache(tmp_path / "kc", "s")
    cache.ensure_identity({"task": "t"})
    with cache.writer() as w:
        w.append(CacheRecord(**{"key": "K1", "case_id": "C", "status": "failed", "output": None}))
        w.append(CacheRecord(**{"key": "K2", "case_id": "C", "status": "ok", "output": {"v": "old input"}}))
        w.append(CacheRecord(**{"key": "K1", "case_id": "C", "status": "ok", "output": {"v": "current input"}}))
    rec = cache.by_case()["C"]
    assert rec.key == "K1" and rec.output == {"v": "current input"}
    assert list(cache.load().records) == ["K2", "K1"]  # order of each key's last line


def test_misspelled_curated_pbk_type_stops_before_writing(tmp_path):
    """issue 12: a type the rules backend has no curated entry for was exit 0 with a failed record."""
    from typer.testing import CliRunner

    from kemm.knowledge import api
    from kemm.knowledge.cli import app
    from kemm.knowledge.store.inputs import InputError

    with pytest.raises(InputError, match=r"no curated prognostic knowledge for BLCX .*curated types: .*BLCA"):
        api.build_pbk(["BLCA", "BLCX"], "p", cache_dir=tmp_path)
    assert not (tmp_path / "p").exists()
    r = CliRunner().invoke(app, ["build", "pbk", "--cancer-types", "BLCX", "--source", "p", "--cache-dir", str(tmp_path)])
    assert r.exit_code == 2 and "BLCX" in r.output and "Traceback" not in r.output and not (tmp_path / "p").exists()


def test_rules_backend_is_asked_once(tmp_path, monkeypatch):
    """Deterministic: the repair loop never asks the rules backend a second time."""
    from kemm.knowledge import api
    from kemm.knowledge.generate import build as build_mod

    seen = []
    real = build_mod.generate_validated

    def spy(backend, reqs, schema, sampling, max_attempts):
        seen.append(max_attempts)
        return real(backend, reqs, schema, sampling, max_attempts)

    monkeypatch.setattr(build_mod, "generate_validated", spy)
    api.build_pbk(["BLCA"], "p", cache_dir=tmp_path, max_attempts=3)
    assert seen == [1]
