"""Run a knowledge task over its inputs into a cached source.

``build(...)`` is resumable and idempotent: records whose key is already in the
source with status ok/skipped are cache hits; everything else (new inputs,
earlier failures, torn lines) is generated and appended.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kemm.knowledge.generate.backends.base import Backend, GenerationRequest
from kemm.knowledge.records import CacheRecord
from kemm.knowledge.store.cache import RecordWriter, SourceCache, canonical_json, now_iso, record_key, sha256_text
from kemm.knowledge.store.inputs import TaskInput
from kemm.knowledge.generate.prompts import Prompt
from kemm.knowledge.generate.repair import Outcome, generate_validated
from kemm.knowledge.generate.schemas import schema_sha


@dataclass
class BuildSummary:
    source: str
    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    cached: int = 0
    generated: int = 0
    corrupt_lines: int = 0
    elapsed_s: float = 0.0
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def line(self) -> str:
        """One log line: ``412 inputs: 411 ok, 0 failed, 1 skipped; 0 cached, 412 generated in 3.1 s``."""
        text = (f"{self.total} inputs: {self.ok} ok, {self.failed} failed, {self.skipped} skipped; "
                f"{self.cached} cached, {self.generated} generated in {self.elapsed_s:.1f} s")
        if self.corrupt_lines:
            text += f"; {self.corrupt_lines} corrupt cache lines regenerated"
        return text + (f"; first failure: {self.failures[0]}" if self.failures else "")


def source_identity(prompt: Prompt, backend: Backend, sampling: dict[str, Any]) -> dict[str, Any]:
    desc = backend.describe()
    return {
        "task": prompt.name,
        "prompt_name": prompt.name,
        "prompt_version": prompt.version,
        "prompt_sha": prompt.sha256,
        "schema_name": prompt.schema_name,
        "schema_sha": schema_sha(prompt.schema),
        "backend": backend.name,
        "model_id": desc.get("model_id"),
        "model_revision": desc.get("model_revision"),
        "sampling": sampling,
    }


def effective_sampling(prompt: Prompt, overrides: dict[str, Any] | None) -> dict[str, Any]:
    s = dict(prompt.sampling)
    s.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return s


def build(
    prompt: Prompt,
    inputs: list[TaskInput],
    backend: Backend,
    cache: SourceCache,
    sampling_overrides: dict[str, Any] | None = None,
    batch_size: int = 16,
    max_attempts: int = 3,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    extra_provenance: dict[str, Any] | None = None,
) -> BuildSummary:
    t0 = time.perf_counter()
    sampling = effective_sampling(prompt, sampling_overrides)
    identity = source_identity(prompt, backend, sampling)
    provenance = {"backend_description": backend.describe(), "prompt_path": str(prompt.path)}
    if provenance["backend_description"].get("deterministic"):
        max_attempts = 1  # a deterministic backend (rules) answers a second attempt the same way
    provenance.update(extra_provenance or {})
    cache.ensure_identity(identity, provenance)
    _check_unique_cases(inputs)
    if limit is not None:
        inputs = inputs[:limit]

    summary = BuildSummary(source=cache.source, total=len(inputs))
    todo = _todo(identity, inputs, cache, summary)
    if on_total:
        on_total(len(todo))
    with cache.writer(identity) as w:
        for inp, key in [(i, k) for i, k in todo if i.skip_reason]:
            w.append(_skipped_record(inp, key))
            summary.skipped += 1
            if progress:
                progress(1)
        # Longest reports first: similar lengths share a batch (less padding), memory peaks early.
        gen = sorted([(i, k) for i, k in todo if not i.skip_reason], key=lambda ik: -len(ik[0].key_text))
        chunks = [gen[start : start + batch_size] for start in range(0, len(gen), batch_size)]
        for chunk, reqs, outcomes in _chunk_outcomes(chunks, prompt, backend, sampling, max_attempts):
            _append_chunk(chunk, reqs, outcomes, w, summary)
            if progress:
                progress(len(chunk))
    last = {"at": now_iso(), **{k: v for k, v in summary.as_dict().items() if k != "failures"}}
    if hasattr(backend, "throughput_stats") and summary.generated:  # local backends: tokens/s
        last["throughput"] = backend.throughput_stats()
    cache.update_counts({"last_build": last})
    summary.elapsed_s = time.perf_counter() - t0
    return summary


def _check_unique_cases(inputs: list[TaskInput]) -> None:
    seen: set[str] = set()
    for inp in inputs:
        if inp.case_id in seen:
            raise ValueError(f"duplicate case id {inp.case_id!r} among the inputs")
        seen.add(inp.case_id)


def _todo(identity: dict[str, Any], inputs: list[TaskInput], cache: SourceCache,
          summary: BuildSummary) -> list[tuple[TaskInput, str]]:
    """Inputs whose key has no ok/skipped record yet (counting the hits into ``summary``)."""
    loaded = cache.load()
    summary.corrupt_lines = len(loaded.corrupt_lines)
    todo: list[tuple[TaskInput, str]] = []
    for inp in inputs:
        key = input_key(identity, inp)
        rec = loaded.records.get(key)
        if rec is not None and rec.status in ("ok", "skipped"):
            summary.cached += 1
            setattr(summary, rec.status, getattr(summary, rec.status) + 1)
        else:
            todo.append((inp, key))
    return todo


Chunk = list[tuple[TaskInput, str]]


def _generate_chunk(chunk: Chunk, prompt: Prompt, backend: Backend, sampling: dict[str, Any],
                    max_attempts: int) -> tuple[Chunk, list[GenerationRequest], list[Outcome]]:
    """Render one batch and run it through the repair loop."""
    reqs = [GenerationRequest(messages=prompt.render(**inp.variables), inputs=inp.variables) for inp, _ in chunk]
    return chunk, reqs, generate_validated(backend, reqs, prompt.schema, sampling, max_attempts)


def _chunk_outcomes(chunks: list[Chunk], prompt: Prompt, backend: Backend, sampling: dict[str, Any],
                    max_attempts: int) -> Iterator[tuple[Chunk, list[GenerationRequest], list[Outcome]]]:
    """Each batch's requests and outcomes, in the order of ``chunks``.

    A backend with ``parallel_batches`` > 1 (engine replicas, ``backends/replicas.py``) gets that many
    batches at once, each through its own repair loop; at most twice that many are in flight, so an
    interrupted build loses little finished work.
    """
    n = int(getattr(backend, "parallel_batches", 1) or 1)
    if n <= 1:
        for chunk in chunks:
            yield _generate_chunk(chunk, prompt, backend, sampling, max_attempts)
        return
    pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="kemm-batch")
    futures: deque[Future] = deque()
    try:
        for chunk in chunks:
            futures.append(pool.submit(_generate_chunk, chunk, prompt, backend, sampling, max_attempts))
            if len(futures) >= 2 * n:
                yield futures.popleft().result()
        while futures:
            yield futures.popleft().result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _append_chunk(chunk: Chunk, reqs: list[GenerationRequest], outcomes: list[Outcome], w: RecordWriter,
                  summary: BuildSummary) -> None:
    """Append one batch's records (in the driver's thread: the writer and summary are not shared)."""
    for (inp, key), req, oc in zip(chunk, reqs, outcomes):
        w.append(_generated_record(inp, key, req, oc))
        summary.generated += 1
        if oc.status == "ok":
            summary.ok += 1
        else:
            summary.failed += 1
            summary.failures.append(inp.case_id)


def input_key(identity: dict[str, Any], inp: TaskInput) -> str:
    """Cache key of one input: the source identity plus every variable the prompt renders
    (case id, cancer type, report text), so two patients with the same text never share a record."""
    return record_key(identity, canonical_json(inp.variables))


def _messages_text(messages: list[dict[str, str]]) -> str:
    return "\n".join(f"<{m['role']}>\n{m['content']}" for m in messages)


def _skipped_record(inp: TaskInput, key: str) -> CacheRecord:
    return CacheRecord(key=key, case_id=inp.case_id, status="skipped", input_sha=sha256_text(inp.key_text),
                       errors=[inp.skip_reason or ""], input_meta=inp.meta, created=now_iso())


def _generated_record(inp: TaskInput, key: str, req: GenerationRequest, oc: Outcome) -> CacheRecord:
    return CacheRecord(
        key=key,
        case_id=inp.case_id,
        status=oc.status,
        input_sha=sha256_text(inp.key_text),
        rendered_prompt_sha=sha256_text(_messages_text(req.messages)),
        raw_output=oc.raw_output,
        output=oc.output,
        errors=oc.errors,
        attempts=oc.attempts,
        finish_reason=oc.finish_reason,
        latency_s=round(oc.latency_s, 4),
        input_meta=inp.meta,
        created=now_iso(),
        meta=oc.meta,
    )
