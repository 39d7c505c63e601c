"""CPU generation speed: today's defaults vs length-sorted token-budget batches (+ sectioning).

    PYTHONPATH=. python experiments/bench/llm_speed.py --n 6 --max-tokens 64 [--out llm_speed.json]

Same real reports, same packaged model (smollm2-135m-instruct), greedy, one run:

- ``old``: torch's default threads (one per core), batches of 16 prompts, each padded to
  its longest prompt, transformers' own growing KV cache (the backend before issue 11: one
  ``generate`` per build batch of 16);
- ``batched``: the backend's defaults: threads chosen for the machine, token-budget batches,
  the reserved KV cache, each prompt prefilled alone and the batch decoded together; same
  inputs: greedy outputs must equal ``old``'s;
- ``batched, budget 8192``: the defaults with the previous CPU token budget (smaller decode
  batches), to show what the larger budget adds;
- ``batched, batch prefill``: the batch prefilled padded (``prefill="batch"``, and so the
  previous budget 8192: the previous defaults but for the reserved cache), to show what
  row-by-row prefill adds;
- ``batched+sections``: the defaults plus report sectioning (shorter prompts, other outputs);
- ``batched bfloat16``: the defaults in bfloat16 (not the same arithmetic: how many greedy
  outputs still equal ``old``'s is counted, not required).

The threads of the new arms are chosen once, before any arm runs, as a fresh
``kemm-knowledge build`` on this machine would choose them: chosen between arms, the load
average would count this script's own previous arm as other people's work.

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
from kemm.knowledge.generate.batching import cpu_threads
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
    print(json.dumps({"arm": name, "starting": True, "options": options}), flush=True)
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


def machine_rates(threads: int) -> dict:
    """What this machine sustains at ``threads``: float32 GEMM GFLOP/s (shapes of the model's MLP) and
    memory read GB/s (a 1 GiB tensor summed: larger than every cache)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 576), torch.randn(576, 1536)
    big = torch.ones(2**28)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(20):
        a @ b
    gemm = 20 * 2 * 2048 * 576 * 1536 / (time.perf_counter() - t) / 1e9
    big.sum()
    t = time.perf_counter()
    for _ in range(3):
        big.sum()
    read = 3 * big.numel() * 4 / (time.perf_counter() - t) / 1e9
    return {"threads": threads, "gemm_gflops": round(gemm, 1), "read_gbps": round(read, 1)}


def float32_floor(reports: list[tuple[str, str]], max_tokens: int, rates: dict, budget: int) -> dict:
    """A lower bound on the batched arm's wall time in float32, whatever the code: prefill FLOPs at the
    measured GEMM rate, plus one read of the weights and the batch's KV cache per decode step at the
    measured memory rate (prefix sharing and fewer decode batches would each move it by a few %)."""
    from transformers import AutoConfig, AutoTokenizer

    from kemm.knowledge.generate.batching import token_budget_batches
    from kemm.knowledge.generate.catalog import prepare

    path = prepare(MODEL)
    cfg, tok = AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    prompt = load_prompt("refine_report", 1)
    chats = [tok.apply_chat_template(prompt.render(case_id=c, cancer_type="BLCA", report_text=t), tokenize=False,
                                     add_generation_prompt=True) for c, t in reports]
    lengths = [len(tok(x, add_special_tokens=False)["input_ids"]) for x in chats]  # as the backend tokenizes
    d, f, n_layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    linear = n_layers * (2 * d * d + 2 * d * kv + 3 * d * f)  # q, o, k, v, gate/up/down weights
    prefill_flop = sum(2 * linear * L + n_layers * 2 * d * L * L for L in lengths)  # causal attention: 2·d·L² a layer
    weight_bytes = 4 * (linear + cfg.vocab_size * d)
    decode_bytes = 0
    for batch in token_budget_batches(lengths, budget):
        longest = max(lengths[i] for i in batch)
        kv_bytes = 4 * 2 * n_layers * kv * len(batch) * (longest + max_tokens // 2)
        decode_bytes += (max_tokens - 1) * (weight_bytes + kv_bytes)
    prefill_s = prefill_flop / (rates["gemm_gflops"] * 1e9)
    decode_s = decode_bytes / (rates["read_gbps"] * 1e9)
    return {"prompt_tokens": sum(lengths), "prefill_tflop": round(prefill_flop / 1e12, 2),
            "decode_gb_read": round(decode_bytes / 1e9, 1), "prefill_floor_s": round(prefill_s, 1),
            "decode_floor_s": round(decode_s, 1), "floor_s": round(prefill_s + decode_s, 1), **rates}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reports", type=Path, default=Path(os.environ.get("KEMM_SHARED_DATA", "../shared/data"))
                    / "raw/tcga-path-report/Reports/BLADDER.csv")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("llm_speed.json"))
    ap.add_argument("--floor-only", action="store_true",
                    help="only add the float32 floor to an existing --out (after the arms ran: the probe needs the cores)")
    args = ap.parse_args()
    reports = load_reports(args.reports, args.n)
    if args.floor_only:
        res = json.loads(args.out.read_text())
        add_floor(res, reports)
        args.out.write_text(json.dumps(res, indent=1))
        return
    sampling = {"temperature": 0.0, "top_p": 1.0, "max_tokens": args.max_tokens, "seed": 0}
    cores = len(os.sched_getaffinity(0))
    load_at_start, threads = os.getloadavg()[0], cpu_threads()
    print(json.dumps({"cores": cores, "load_1min_at_start": load_at_start, "threads_chosen": threads}), flush=True)
    new = {"threads": threads}
    old_defaults = {"threads": cores, "token_budget": 10**9, "max_batch_rows": 16, "kv_cache": "dynamic", "prefill": "batch"}
    arms = [
        run_arm("old", reports, False, old_defaults, sampling),
        run_arm("batched", reports, False, new, sampling),
        run_arm("batched, budget 8192", reports, False, {**new, "token_budget": 8192}, sampling),
        run_arm("batched, batch prefill", reports, False, {**new, "prefill": "batch"}, sampling),
        run_arm("batched+sections", reports, True, new, sampling),
        run_arm("batched bfloat16", reports, False, {**new, "dtype": "bfloat16"}, sampling),
    ]
    old = arms[0]
    same_inputs = [a for a in arms[1:] if "sections" not in a["arm"]]
    res = {
        "model": MODEL, "reports": len(reports), "file": args.reports.name, "max_tokens": args.max_tokens,
        "cores": cores, "load_1min_at_start": load_at_start, "threads_chosen_at_start": threads,
        "arms": [{k: v for k, v in a.items() if k != "texts"} for a in arms],
        "speedup_wall": {a["arm"]: round(old["wall_s"] / a["wall_s"], 2) for a in arms[1:]},
        "speedup_cpu": {a["arm"]: round(old["cpu_s"] / a["cpu_s"], 2) for a in arms[1:]},
        "batched_outputs_equal_old": sum(a == b for a, b in zip(old["texts"], arms[1]["texts"])),
        "outputs_equal_old": {a["arm"]: sum(x == y for x, y in zip(old["texts"], a["texts"])) for a in same_inputs},
    }
    add_floor(res, reports)
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: res[k] for k in ("speedup_wall", "speedup_cpu", "outputs_equal_old", "float32_floor")}))


def add_floor(res: dict, reports: list[tuple[str, str]]) -> None:
    """The float32 floor of the batched arm and the best wall ratio it allows against ``old``."""
    old = next(a for a in res["arms"] if a["arm"] == "old")
    batched = next(a for a in res["arms"] if a["arm"] == "batched")
    fl = float32_floor(reports, res["max_tokens"], machine_rates(res["threads_chosen_at_start"]), batched["token_budget"])
    fl["best_possible_ratio_vs_old"] = round(old["wall_s"] / fl["floor_s"], 2)
    res["float32_floor"] = fl
    print(json.dumps({"float32_floor": fl}), flush=True)


if __name__ == "__main__":
    main()
