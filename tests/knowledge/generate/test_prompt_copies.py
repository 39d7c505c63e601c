"""Audit claim kind 'copied from the prompt', and the v2 prompts that show no copyable values."""
from __future__ import annotations

import json

from kemm.knowledge.records import CacheRecord
from kemm.knowledge.review.audit import audit_source
from kemm.knowledge.store.cache import SourceCache
from kemm.knowledge.review.claims import check_output
from kemm.knowledge.store.inputs import read_reports
from kemm.knowledge.generate.prompts import load_prompt
from kemm.knowledge.review.prompt_copies import copied_claims, examples_of, prompt_examples
from llm_fixtures import write_short_reports

NR = "not reported"


def _output(**kw):
    base = dict(histologic_type="urothelial carcinoma", grade=NR, pT=NR, pN=NR, pM=NR, stage_group=NR,
                tumor_size=NR, nodes_positive=NR, nodes_examined=NR, margin_status=NR,
                lymphovascular_invasion=NR, perineural_invasion=NR, key_statements=[], summary="A summary.")
    base.update(kw)
    return base


def test_v1_shows_examples_and_v2_shows_none():
    v1, v2 = load_prompt("refine_report", 1), load_prompt("refine_report", 2)
    assert {"T2a", "stage IIIA"} <= examples_of(v1)
    assert examples_of(v2) == set()
    assert prompt_examples(load_prompt("pbk", 2).render(cancer_type="BLCA", cancer_name="")) == set()


def test_a_prompt_example_absent_from_the_report_is_a_copy():
    report = "Invasive urothelial carcinoma, pT3 N0, grade 3."
    out = _output(pT="T2a", pN="N0", stage_group="IIIA", key_statements=["Tumour is pT3."])
    claims = check_output(out, report)
    copied = copied_claims(claims, examples_of(load_prompt("refine_report", 1)))
    assert sorted(c.where for c in copied) == ["pT", "stage_group"]
    # the same value, stated by the report, is no copy
    assert copied_claims(check_output(_output(pT="T2a"), "pT2a N0"), {"T2a"}) == []


def test_audit_counts_records_that_copy_the_prompt(tmp_path):
    reports = write_short_reports(tmp_path / "r.csv")  # case 0001 states pT2a; 0002 states pT1c
    prompt = load_prompt("refine_report", 1)
    cache = SourceCache(tmp_path / "cache", "src")
    cache.ensure_identity({"task": "refine_report", "prompt_name": "refine_report", "prompt_version": 1,
                           "prompt_sha": prompt.sha256, "schema_name": "RefinedReport", "backend": "test"},
                          {"prompt_path": str(prompt.path)})
    inputs = {i.case_id: i for i in read_reports(reports)}
    with cache.writer() as w:
        for case, pt in (("TCGA-AA-0001", "T2a"), ("TCGA-AA-0002", "T2a")):
            w.append(CacheRecord(key=case, case_id=case, status="ok", output=_output(pT=pt),
                                 input_meta=inputs[case].meta, attempts=1))
    rep = audit_source(tmp_path / "cache", "src", reports=[reports])
    cp = rep.faithfulness.copied_from_prompt
    assert cp.records == 1 and cp.cases == {"TCGA-AA-0002": ["pT: T2a"]}
    assert cp.rate == 0.5 and "T2a" in cp.prompt_examples
    assert json.loads(json.dumps(rep.as_dict()))["faithfulness"]["copied_from_prompt"]["records"] == 1  # --json
