"""Claims copied from the prompt, before and after a prompt change: two sources, the same cases.

    PYTHONPATH=. python experiments/bench/prompt_copy_rate.py --reports BLADDER.csv \\
        --sources tcga-blca-smollm2-v1 tcga-blca-smollm2 [--cache-dir knowledge_cache] [--out prompt_copies.json]

Each source is audited (``kemm-knowledge audit``); the comparison is restricted to the cases
that are ok in every source, so both prompts are judged on the same reports. A record
"copies" when it states a value the rendered prompt shows as an example (TNM category,
stage group, grade, size) that its report does not contain. Writes aggregates only.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from kemm.knowledge.review.audit import audit_source
from kemm.knowledge.review.prompt_copies import copied_claims


def compare(cache_dir: Path, sources: list[str], reports: list[Path]) -> dict:
    audits = {s: audit_source(cache_dir, s, reports=reports) for s in sources}
    # the cases every source has ok AND verifiable (its report found), so all are judged on the same reports
    ok = {s: {r.case_id for r in a.records if r.status == "ok" and r.unverifiable is None} for s, a in audits.items()}
    shared = set.intersection(*ok.values())
    out = {"shared_ok_cases": len(shared), "sources": {}}
    for s, a in audits.items():
        f = a.faithfulness
        cp = f.copied_from_prompt if f is not None else None
        recs = [r for r in a.records if r.case_id in shared and r.unverifiable is None]
        examples = set(cp.prompt_examples or []) if cp else set()
        # from every record's claims (the audit's `cases` lists only the first 50 copying records)
        cases = {r.case_id: [f"{c.where}: {c.value}" for c in hits] for r in recs
                 if (hits := copied_claims(r.claims, examples))}
        values = Counter(v for vs in cases.values() for v in vs)
        claims = [c for r in recs for c in r.claims]
        out["sources"][s] = {
            "prompt_version": a.manifest.get("identity", {}).get("prompt_version"),
            "prompt_examples": cp.prompt_examples if cp else None,
            "ok_records": len(ok[s]),
            "copying_records_shared": len(cases),
            "copy_rate_shared": round(len(cases) / len(recs), 4) if recs else None,
            "copied_values_shared": values.most_common(8),
            "faithful_records_shared": round(sum(not r.unsupported for r in recs) / len(recs), 4) if recs else None,
            "claim_support_shared": round(sum(c.supported for c in claims) / len(claims), 4) if claims else None,
            "faithful_records_all": f.faithfulness if f else None,
            "claim_support_all": f.claim_support if f else None,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reports", type=Path, nargs="+", required=True)
    ap.add_argument("--sources", nargs="+", required=True)
    ap.add_argument("--cache-dir", type=Path, default=Path("knowledge_cache"))
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("prompt_copies.json"))
    args = ap.parse_args()
    res = compare(args.cache_dir, args.sources, args.reports)
    args.out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
