"""records.jsonl lines written by kemm before CacheRecord existed load, and re-dump byte for byte."""
from __future__ import annotations

import json

from kemm.knowledge.records import CacheRecord
from kemm.knowledge.store.cache import SourceCache

# Written by the dict-based build (af49b2a): 13 keys plus the backend's "meta".
OLD_BUILT = (
    '{"key": "5f2c0a", "case_id": "TCGA-ZZ-0000", "status": "ok", "input_sha": "ab12", '
    '"rendered_prompt_sha": "cd34", "raw_output": "{\\"grade\\": \\"G2\\"}", "output": {"grade": "G2", '
    '"key_statements": ["Grade 2 (moderately differentiated)."], "nodes_positive": 0}, "errors": [], '
    '"attempts": 1, "finish_reason": "stop", "latency_s": 0.0123, "input_meta": {"file": "r.csv", "row": 0}, '
    '"created": "2025-01-02T03:04:05+00:00", "meta": {"prompt_tokens": 812}}'
)
# Written by the dict-based importer: the same 13 keys, no "meta"; non-ASCII kept as is.
OLD_IMPORTED = (
    '{"key": "9e8d", "case_id": "TCGA-ZZ-0001", "status": "failed", "input_sha": null, '
    '"rendered_prompt_sha": null, "raw_output": "Stage: pT2 — justified", "output": null, '
    '"errors": ["line 2: no \'case_id\'"], "attempts": 1, "finish_reason": "imported", "latency_s": 0.0, '
    '"input_meta": {"file": "x.jsonl", "line": 2, "format": "jsonl"}, "created": "2025-01-02T03:04:05+00:00"}'
)


def test_old_lines_load_typed_and_redump_byte_for_byte(tmp_path):
    sc = SourceCache(tmp_path, "old")
    sc.dir.mkdir(parents=True)
    sc.records_path.write_text(OLD_BUILT + "\n" + OLD_IMPORTED + "\n", encoding="utf-8")
    rep = sc.load()
    assert rep.corrupt_lines == [] and rep.n_lines == 2
    built, imported = rep.records["5f2c0a"], rep.records["9e8d"]
    assert isinstance(built, CacheRecord)
    assert built.status == "ok" and built.ok_output == {"grade": "G2", "key_statements": ["Grade 2 (moderately differentiated)."],
                                                        "nodes_positive": 0}
    assert built.meta == {"prompt_tokens": 812} and built.latency_s == 0.0123
    assert imported.status == "failed" and imported.ok_output is None and imported.meta is None
    assert imported.errors == ["line 2: no 'case_id'"] and imported.input_meta["format"] == "jsonl"
    assert built.to_line() == OLD_BUILT and imported.to_line() == OLD_IMPORTED
    assert sc.by_case()["TCGA-ZZ-0000"] == built


def test_appended_record_is_the_old_line_format(tmp_path):
    sc = SourceCache(tmp_path, "new")
    rec = CacheRecord.model_validate_json(OLD_IMPORTED)
    with sc.writer() as w:
        w.append(rec)
    assert sc.records_path.read_text(encoding="utf-8") == OLD_IMPORTED + "\n"


def test_unknown_keys_of_other_versions_survive(tmp_path):
    line = json.loads(OLD_IMPORTED)
    line["future_field"] = {"x": 1}
    rec = CacheRecord.model_validate(line)
    assert rec.to_json() == line


def test_torn_and_foreign_lines_are_corrupt(tmp_path):
    sc = SourceCache(tmp_path, "bad")
    sc.dir.mkdir(parents=True)
    sc.records_path.write_text(OLD_BUILT + "\n" + '{"key": "k", "status": "weird", "case_id": "C"}\n' + OLD_IMPORTED[:40],
                               encoding="utf-8")
    rep = sc.load()
    assert list(rep.records) == ["5f2c0a"] and rep.corrupt_lines == [2, 3]
