"""How a local backend plans its work: length-sorted token-budget batches, threads, throughput.

A batch of a causal LM is padded to its longest prompt, so one 5,000-token
report in a batch of sixteen 500-token reports makes the batch ten times as
expensive.  :func:`token_budget_batches` sorts the prompts by length and cuts
them into batches whose padded size (rows × longest prompt) stays within a
token budget; a prompt longer than the budget runs alone.

On a CPU, torch's default of one thread per core is a poor choice on a shared
machine: threads that wait on each other are slower than one.
:func:`cpu_threads` takes the cores this process may use, minus the load the
rest of the machine already puts on them.

:class:`Throughput` sums prompt and output tokens and the time spent in
prefill (up to the first generated token) and decode, for the manifest.

Imports: the standard library only.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CPU_TOKEN_BUDGET = 8192
DEFAULT_CPU_ROWS_PREFILL_BUDGET = 32768
DEFAULT_GPU_TOKEN_BUDGET = 65536


def default_token_budget(gpu: bool, rows_prefill: bool) -> int:
    """The padded prompt tokens a batch may hold when the user sets no ``--token-budget``.

    On a CPU whose backend prefills each prompt alone (``rows_prefill``), the budget no longer
    buys padding in the prefill: it only sizes the decode batches, and fewer, larger batches
    take fewer decode steps.  SmolLM2-135M, 20 real reports, 2 threads: 32768 (3 batches)
    decoded in 41.5 s what 8192 (9 batches) decoded in 66.6 s, same greedy outputs
    (experiments/bench/RESULTS.md §4).
    """
    if gpu:
        return DEFAULT_GPU_TOKEN_BUDGET
    return DEFAULT_CPU_ROWS_PREFILL_BUDGET if rows_prefill else DEFAULT_CPU_TOKEN_BUDGET


def token_budget_batches(lengths: list[int], budget: int, max_rows: int | None = None) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches, longest prompts first.

    Args:
        lengths: prompt length in tokens per request, ``[N]``.
        budget: most padded prompt tokens per batch (rows × longest row).
        max_rows: most rows per batch (None: only the budget limits).

    Returns:
        a list of batches, each a list of indices into ``lengths``; every index
        appears exactly once.  Within a batch, the first index is the longest.
    """
    if budget < 1:
        raise ValueError(f"token budget must be >= 1, got {budget}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = lengths[cur[0]] if cur else lengths[i]
        full = max_rows is not None and len(cur) >= max_rows
        if cur and (full or (len(cur) + 1) * longest > budget):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def cpu_threads(requested: int | None = None) -> int:
    """Threads for torch on a CPU: ``requested``, else the usable cores minus the
    machine's current load (1-minute average), at least 1.

    On an idle 16-core box this is 16; on a 2-core box that other jobs keep
    busy (load ≥ 1) it is 1, which measured 5× faster decode than 2 threads
    fighting over one free core.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - no load average on this platform
        load = 0.0
    return max(1, min(cores, math.floor(cores - load + 0.5)))


@dataclass
class Throughput:
    """Token counts and seconds of a backend's generate calls (summed over batches)."""

    prompt_tokens: int = 0
    output_tokens: int = 0
    padded_prompt_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    batches: int = 0
    rows: int = 0
    batch_sizes: list[int] = field(default_factory=list)

    def add(self, prompt_tokens: int, padded: int, output_tokens: int, prefill_s: float, total_s: float, rows: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.padded_prompt_tokens += padded
        self.output_tokens += output_tokens
        self.prefill_s += prefill_s
        self.decode_s += max(total_s - prefill_s, 0.0)
        self.batches += 1
        self.rows += rows
        self.batch_sizes.append(rows)

    def as_dict(self) -> dict[str, Any]:
        total = self.prefill_s + self.decode_s
        return {
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "padding_share": round(1 - self.prompt_tokens / self.padded_prompt_tokens, 4) if self.padded_prompt_tokens else 0.0,
            "prefill_s": round(self.prefill_s, 3),
            "decode_s": round(self.decode_s, 3),
            "prompt_tokens_per_s": round(self.prompt_tokens / self.prefill_s, 1) if self.prefill_s else None,
            "output_tokens_per_s": round(self.output_tokens / self.decode_s, 1) if self.decode_s else None,
            "records_per_min": round(60 * self.rows / total, 2) if total else None,
            "batches": self.batches,
            "mean_batch_rows": round(self.rows / self.batches, 2) if self.batches else 0,
        }


class FirstStepClock:
    """A logits processor that notes when the first token is chosen (= prefill done).

    Placed first in the processor list; it never changes the scores.
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.first is None:
            self.first = time.perf_counter()
        return scores

    def prefill_s(self) -> float:
        return (self.first - self.start) if self.first is not None else 0.0
