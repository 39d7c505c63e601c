"""Report sectioning on every real report file: prompt tokens and rules agreement, before/after.

    PYTHONPATH=. python experiments/bench/sectioning.py [--reports DIR] [--out sectioning.json]

Every version in ``sectioning.VERSIONS`` is measured on the same reports; ``lost`` counts the T
categories and grades the extractor finds in the full text but not in the sectioned one.
Tokens are counted with the packaged SmolLM2 tokenizer (``kemm-knowledge models
--prepare smollm2-135m-instruct``).  Agreement: the rules extractor's T category
and grade against the files' own ``stage``/``grade`` columns, computed as in
tests/knowledge/rules/test_extract.py::test_agreement_with_report_files.  Writes aggregates only.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[2] / "tests"
sys.path[:0] = [str(_TESTS / "knowledge" / "rules"), str(_TESTS)]  # test_extract imports conftest

from test_extract import _t_number, file_grade, file_t, grade_agrees  # noqa: E402 - the test's own definitions

from kemm.knowledge.generate import catalog  # noqa: E402
from kemm.knowledge.generate.sectioning import SECTIONING_VERSION, VERSIONS, section_report  # noqa: E402
from kemm.knowledge.rules.extract import extract_report  # noqa: E402
from kemm.knowledge.generate.schemas import NOT_REPORTED as NR  # noqa: E402


def lost(full: list, sect: list) -> dict:
    """T categories and grades the extractor finds in the full text but not in the sectioned one."""
    return {f: sum(getattr(a, f) != NR and getattr(b, f) == NR for a, b in zip(full, sect)) for f in ("pT", "grade")}


def agreement(texts: list[str], rows: list[dict], reps: list | None = None) -> dict:
    reps = reps if reps is not None else [extract_report(t) for t in texts]
    t_pairs = [(r.pT, ft) for r, row in zip(reps, rows) if r.pT != NR and (ft := file_t(row.get("stage", "")))]
    g_pairs = [(r.grade, fg) for r, row in zip(reps, rows) if r.grade != NR and (fg := file_grade(row.get("grade", "")))]
    return {
        "t_n": len(t_pairs),
        "t_agree": sum(_t_number(a) == _t_number(b) for a, b in t_pairs),
        "g_n": len(g_pairs),
        "g_agree": sum(grade_agrees(a, b) for a, b in g_pairs),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reports", type=Path, default=Path(os.environ.get("KEMM_SHARED_DATA", "../shared/data"))
                    / "raw/tcga-path-report/Reports")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("sectioning.json"))
    args = ap.parse_args()
    from transformers import AutoTokenizer  # lazy: heavy

    tok = AutoTokenizer.from_pretrained(catalog.prepare("smollm2-135m-instruct"))
    csv.field_size_limit(2**31 - 1)
    per_file, all_ratio, t0 = [], [], time.process_time()
    for path in sorted(args.reports.glob("*.csv")):
        with open(path, encoding="utf-8", newline="") as f:
            rows = [r for r in csv.DictReader(f) if (r.get("ocr_text") or "").strip()]
        before = [r["ocr_text"] for r in rows]
        nb = [len(x) for x in tok(before, add_special_tokens=False)["input_ids"]]
        full = [extract_report(t) for t in before]
        entry = {"file": path.name, "reports": len(rows), "median_tokens_before": statistics.median(nb),
                 "before": agreement(before, rows, full)}
        for v in VERSIONS:  # every version, so a new one is compared with the last on the same reports
            after = [section_report(t, v).text for t in before]
            na = [len(x) for x in tok(after, add_special_tokens=False)["input_ids"]]
            ratio = [a / b for a, b in zip(na, nb) if b]
            if v == SECTIONING_VERSION:
                all_ratio += ratio
            sect = [extract_report(t) for t in after]
            entry[v] = {"median_tokens_after": statistics.median(na), "median_reduction": round(1 - statistics.median(ratio), 3),
                        "after": agreement(after, rows, sect), "lost": lost(full, sect)}
        per_file.append(entry)
        print(json.dumps(per_file[-1]), flush=True)
    res = {"default_version": SECTIONING_VERSION, "files": per_file, "reports": len(all_ratio),
           "median_reduction_all": round(1 - statistics.median(all_ratio), 3),
           "cpu_seconds": round(time.process_time() - t0, 1)}
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "files"}))


if __name__ == "__main__":
    main()
