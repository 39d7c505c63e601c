"""CPU generation speed: today's defaults vs length-sorted token-budget batches (+ sectioning).

    PYTHONPATH=. python experiments/bench/llm_speed.py --n 6 --max-tokens 64 [--out llm_speed.json]

Same real reports, same packaged model (smollm2-135m-instruct), greedy, one run:

- ``old``: torch's default threads (one per core), batches of 16 prompts, each padded to
  its longest prompt (the backend before this change: one ``generate`` per build batch of 16);
- ``batched``: threads chosen for the machine, token-budget batches, same inputs:
  greedy outputs must equal ``old``'s;
- ``batched+sections``: the same plus report sectioning (shorter prompts, other outputs).

Calls the backend directly (no repair loop), so every arm generates exactly once per
report.  Writes aggregates only (times, token counts, tokens/s), never report text.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

from kemm.knowledge.generate.backends.base import GenerationRequest
from kemm.knowledge.generate.backends.registry import create_backend
from kemm.knowledge.generate.sectioning import SECTIONING_VERSION, section_report
from kemm.knowledge.generate.prompts import load_prompt
from kemm.knowledge.generate.schemas import RefinedReport

MODEL = "smollm2-135m-instruct"


def load_reports(path: Path, n: int) -> list[tuple[str, str]]:
    csv.field_size_limit(2**31 - 1)
    with open(path, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if len((r.get("ocr_text") or "").strip()) > 200]
    return [(r["pdf_file_name_path"][:12], r["ocr_text"]) for r in rows[:n]]


def run_arm(name: str, reports: list[tuple[str, str]], sections: bool, options: dict, sampling: dict) -> dict:
    prompt = load_prompt("refine_report", 1)
    reqs = []
    for case, text in reports:
        t = section_report(text, SECTIONING_VERSION).text if sections else text
        reqs.append(GenerationRequest(messages=prompt.render(case_id=case, cancer_type="BLCA", report_text=t)))
    be = create_backend("transformers", model=MODEL, device="cpu", **options)
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        res = be.generate(reqs, RefinedReport, sampling)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        stats = be.throughput_stats()
    finally:
        be.close()
    out = {"arm": name, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_1min_at_end": os.getloadavg()[0],
           **stats, "texts": [r.text for r in res]}
    print(json.dumps({k: v for k, v in out.items() if k != "texts"}), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reports", type=Path, default=Path(os.environ.get("KEMM_SHARED_DATA", "../shared/data"))
                    / "raw/tcga-path-report/Reports/BLADDER.csv")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("llm_speed.json"))
    args = ap.parse_args()
    reports = load_reports(args.reports, args.n)
    sampling = {"temperature": 0.0, "top_p": 1.0, "max_tokens": args.max_tokens, "seed": 0}
    cores = len(os.sched_getaffinity(0))
    arms = [
        run_arm("old", reports, False, {"threads": cores, "token_budget": 10**9, "max_batch_rows": 16}, sampling),
        run_arm("batched", reports, False, {}, sampling),
        run_arm("batched+sections", reports, True, {}, sampling),
    ]
    old = arms[0]
    res = {
        "model": MODEL, "reports": len(reports), "file": args.reports.name, "max_tokens": args.max_tokens,
        "cores": cores,
        "arms": [{k: v for k, v in a.items() if k != "texts"} for a in arms],
        "speedup_wall": {a["arm"]: round(old["wall_s"] / a["wall_s"], 2) for a in arms[1:]},
        "speedup_cpu": {a["arm"]: round(old["cpu_s"] / a["cpu_s"], 2) for a in arms[1:]},
        "batched_outputs_equal_old": sum(a == b for a, b in zip(old["texts"], arms[1]["texts"])),
    }
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: res[k] for k in ("speedup_wall", "speedup_cpu", "batched_outputs_equal_old")}))


if __name__ == "__main__":
    main()
