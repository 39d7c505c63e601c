"""Parse → validate → retry with the error fed back → failure record.

Shared by every backend.  A request whose output fails the schema is asked
again with the model's own answer and the validation error appended to the
conversation (as instructor does), at most ``max_attempts`` times in all.
What still fails comes back as a failure with its last raw text and errors;
one bad record never aborts the batch.

An output cut off by the token limit (``finish_reason == "length"``, not valid) is
not "wrong", only unfinished: feeding it back makes a small model repeat itself.
It is asked again with the conversation as it stood before that output (nothing
appended) and twice the ``max_tokens`` (at most ``MAX_TOKENS_GROWTH`` times the
configured value); once the limit cannot grow, the record fails at once instead of
repeating the same call. The record's errors and ``meta`` say which limit produced
the output. The policy is deterministic, so a rebuild reproduces it. (A grown limit
may exceed a served model's context: the server's error then fails that record.)
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from kemm.knowledge.generate.backends.base import Backend, GenerationRequest, GenerationResult

MAX_TOKENS_GROWTH = 4

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


@dataclass
class Outcome:
    status: str  # "ok" | "failed"
    output: dict[str, Any] | None
    raw_output: str
    errors: list[str] = field(default_factory=list)
    attempts: int = 0
    finish_reason: str = ""
    latency_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


def extract_json(text: str) -> Any:
    """Parse the JSON object in ``text``: tolerant of code fences, prose around the
    object, and raw control characters inside strings (``strict=False``)."""
    s = text.strip()
    m = _FENCE.match(s)
    if m:
        s = m.group(1)
    try:
        return json.loads(s, strict=False)
    except json.JSONDecodeError:
        pass
    start = s.find("{")
    if start < 0:
        raise ValueError("no JSON object found in the output")
    dec = json.JSONDecoder(strict=False)
    try:
        obj, _ = dec.raw_decode(s[start:])
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    return obj


def validate_text(text: str, schema: type[BaseModel]) -> tuple[BaseModel | None, list[str]]:
    try:
        obj = extract_json(text)
    except ValueError as e:
        return None, [str(e)]
    try:
        return schema.model_validate(obj), []
    except ValidationError as e:
        errs = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "<root>"
            errs.append(f"{loc}: {err['msg']}")
        return None, errs


def feedback_message(errors: list[str]) -> str:
    lines = "\n".join(f"- {e}" for e in errors[:20])
    return (
        "Your previous answer did not match the required JSON schema:\n"
        f"{lines}\n"
        "Return the corrected JSON object only, with every field valid. "
        "Use \"not reported\" for anything the report does not state."
    )


def generate_validated(
    backend: Backend,
    requests: list[GenerationRequest],
    schema: type[BaseModel],
    sampling: dict[str, Any],
    max_attempts: int = 3,
) -> list[Outcome]:
    """Run ``requests`` through ``backend`` with validation and bounded repair."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    outcomes: list[Outcome | None] = [None] * len(requests)
    convs = [list(r.messages) for r in requests]
    attempts = [0] * len(requests)
    latency = [0.0] * len(requests)
    errors: list[list[str]] = [[] for _ in requests]
    budget = [sampling.get("max_tokens")] * len(requests)  # grows for a truncated output (see module doc)
    stuck = [False] * len(requests)  # truncated, and its limit can grow no further
    pending = list(range(len(requests)))
    while pending:
        t0 = time.perf_counter()
        results = _generate_by_budget(backend, [(i, convs[i], requests[i].inputs, budget[i]) for i in pending],
                                      schema, sampling)
        wall = time.perf_counter() - t0
        still = []
        for i, res in zip(pending, results):
            attempts[i] += 1
            latency[i] += res.latency_s or wall / max(len(pending), 1)
            if res.error:
                errs = [f"backend error: {res.error}"]
                obj = None
            else:
                obj, errs = validate_text(res.text, schema)
                if obj is None and res.finish_reason == "length":
                    msg, grew = _truncated(budget, i, sampling.get("max_tokens"), grow=attempts[i] < max_attempts)
                    errs = errs + [msg]
                    # asked again with the same limit it would come back the same: stop there
                    stuck[i] = not grew
            if obj is not None:
                outcomes[i] = Outcome(
                    status="ok",
                    output=obj.model_dump(mode="json"),
                    raw_output=res.text,
                    attempts=attempts[i],
                    finish_reason=res.finish_reason,
                    latency_s=latency[i],
                    meta=res.meta,
                    errors=errors[i],  # errors of earlier attempts, kept for the audit
                )
                continue
            errors[i] = errors[i] + [f"attempt {attempts[i]}: {e}" for e in errs]
            if attempts[i] < max_attempts and not stuck[i]:
                if not res.error and res.finish_reason != "length":
                    convs[i] = convs[i] + [
                        {"role": "assistant", "content": res.text},
                        {"role": "user", "content": feedback_message(errs)},
                    ]
                still.append(i)
            else:
                outcomes[i] = Outcome(
                    status="failed",
                    output=None,
                    raw_output=res.text,
                    errors=errors[i],
                    attempts=attempts[i],
                    finish_reason=res.finish_reason,
                    latency_s=latency[i],
                    meta=res.meta,
                )
        pending = still
    return [o for o in outcomes if o is not None]


def _truncated(budget: list[Any], i: int, configured: Any, grow: bool) -> tuple[str, bool]:
    """(error line, grew) for a truncated output; doubles request ``i``'s token limit when another
    attempt follows and the limit may still grow (at most ``MAX_TOKENS_GROWTH`` x ``configured``)."""
    if grow and isinstance(budget[i], int) and isinstance(configured, int) and budget[i] * 2 <= configured * MAX_TOKENS_GROWTH:
        budget[i] *= 2
        return f"output was truncated (finish_reason=length): asked again with max_tokens={budget[i]}", True
    return "output was truncated (finish_reason=length): raise max_tokens", False


def _generate_by_budget(backend: Backend, items: list[tuple[int, list, dict, Any]], schema: type[BaseModel],
                        sampling: dict[str, Any]) -> list[GenerationResult]:
    """One ``generate`` per distinct token budget (a batch shares its sampling); results in ``items`` order."""
    out: dict[int, GenerationResult] = {}
    for b in dict.fromkeys(it[3] for it in items):
        group = [it for it in items if it[3] == b]
        batch = [GenerationRequest(messages=conv, inputs=inputs) for _, conv, inputs, _ in group]
        s = sampling if b == sampling.get("max_tokens") else {**sampling, "max_tokens": b}
        try:
            res = backend.generate(batch, schema, s)
        except Exception as e:  # a backend that crashes on a batch fails these records, not the build
            res = [GenerationResult(text="", finish_reason="error", error=f"{type(e).__name__}: {e}") for _ in batch]
        if len(res) != len(batch):
            raise RuntimeError(
                f"backend {getattr(backend, 'name', backend)!r} returned {len(res)} results for {len(batch)} requests"
            )
        out.update({it[0]: r for it, r in zip(group, res)})
    return [out[it[0]] for it in items]
