"""Typed records that cross module boundaries in the knowledge half.

:class:`CacheRecord` is one line of a source's ``records.jsonl``: the build (``generate``)
and the importers (``store.importers``) produce it; the cache, the embedder, the audit, the
diff and the public API read it by attribute. Its JSON form is the on-disk format and stays
byte-compatible with caches written before this class existed: the same keys in the same
order, ``meta`` present only on built records, unknown keys of other kemm versions kept.

Imports: pydantic only.
"""
from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["ok", "failed", "skipped"]


class CacheRecord(BaseModel):
    """One generation (or import) result for one input of a knowledge source.

    Attributes:
        key: content address (sha256 of the source identity and the input).
        case_id: patient id (refine_report) or cancer type code (pbk).
        status: ``ok`` (``output`` validated), ``failed`` (``errors`` say why), ``skipped``.
        input_sha: sha256 of the input text (the audit re-reads the report and checks it).
        rendered_prompt_sha: sha256 of the rendered messages (None for imports and skips).
        raw_output: the model's last raw text (kept also when it failed to validate).
        output: the validated output as JSON data, None unless ok.
        errors: validation/backend errors of every attempt (and the skip reason).
        attempts: generation attempts made.
        finish_reason: ``stop``, ``length``, ``error``, ``imported``, ``truncated`` ...
        latency_s: seconds spent generating this record.
        input_meta: where the input came from (file, row, columns ...).
        created: ISO timestamp.
        meta: backend-specific details of a built record (token counts ...); absent on
            imports and skips, and then not written.
        identity_sha: sha256 of the source identity the record was written under (the
            cache's writer stamps it; see ``store.cache.identity_sha``), so an edited or
            replaced ``manifest.json`` is detected. Absent on records of older kemm versions.
    """

    model_config = ConfigDict(extra="allow")

    key: str
    case_id: str
    status: Status
    input_sha: str | None = None
    rendered_prompt_sha: str | None = None
    raw_output: str | None = None
    output: dict[str, Any] | None = None
    errors: list[str] = Field(default_factory=list)
    attempts: int = 0
    finish_reason: str | None = None
    latency_s: float = 0.0
    input_meta: dict[str, Any] = Field(default_factory=dict)
    created: str = ""
    meta: dict[str, Any] | None = None
    identity_sha: str | None = None

    @property
    def ok_output(self) -> dict[str, Any] | None:
        """The validated output when the record is ok, else None."""
        return self.output if self.status == "ok" and isinstance(self.output, dict) else None

    def to_json(self) -> dict[str, Any]:
        """The record as written to ``records.jsonl`` (``meta`` and ``identity_sha`` only when set)."""
        d = self.model_dump(mode="json")
        for optional in ("meta", "identity_sha"):
            if d.get(optional) is None:
                d.pop(optional)
        return d

    def to_line(self) -> str:
        """One JSONL line (no newline), as every earlier kemm version wrote it."""
        return json.dumps(self.to_json(), ensure_ascii=False, default=str)


# --------------------------------------------------------------------------- audit sections
class Stats(BaseModel):
    """Summary of a list of numbers; only ``n`` when the list is empty."""

    n: int
    mean: float | None = None
    min: int | float | None = None
    median: int | float | None = None
    max: int | float | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class AuditValidity(BaseModel):
    """Record statuses, attempts, finish reasons, errors and statement sizes of a source."""

    records: int
    ok: int
    failed: int
    skipped: int
    corrupt_lines: int
    attempts: dict[int, int]
    finish_reasons: dict[str, int]
    truncated: list[str]
    top_errors: list[tuple[str, int]]
    failed_cases: list[str]
    ok_but_invalid: list[str]
    statements_per_record: Stats
    statement_chars: Stats
    statement_words: Stats

    def to_json(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        for k in ("statements_per_record", "statement_chars", "statement_words"):
            d[k] = getattr(self, k).to_json()
        return d


class KindCount(BaseModel):
    claims: int
    unsupported: int


class CopiedFromPrompt(BaseModel):
    """Ok records stating a value the prompt shows as an example, absent from their report.

    ``prompt_examples`` and ``rate`` are None when the prompt the source was built with
    cannot be loaded (then no record is counted).
    """

    prompt_examples: list[str] | None
    records: int
    rate: float | None
    claims: int
    top: list[tuple[str, int]]
    cases: dict[str, list[str]]


class AuditFaithfulness(BaseModel):
    """How many claims of the ok outputs occur in their source reports."""

    checked_records: int
    unverifiable_records: int
    unverifiable_reasons: list[tuple[str, int]]
    records_with_unsupported: int
    faithfulness: float | None
    claims: int
    supported_claims: int
    claim_support: float | None
    records_without_claims: int
    empty_source_records: list[str]
    by_kind: dict[str, KindCount]
    top_unsupported: list[tuple[str, int]]
    copied_from_prompt: CopiedFromPrompt | None = None


class AuditDuplicates(BaseModel):
    """Statements repeated within a record, and boilerplate repeated across records."""

    records_with_repeated_statements: int
    share_records_with_repeats: float | None
    common_statements: list[tuple[str, int]]
