"""Audit a knowledge source before any model sees it.

Checks, in the order a careful reader makes them:

- **validity** — ok / failed / skipped, attempts, finish reasons (``length`` =
  truncated), statement counts and lengths, the commonest errors;
- **faithfulness** (refine_report only) — every number, size, count and
  staging/grade code of each ok output must occur in the record's source
  report (see :mod:`kemm.knowledge.review.claims` for the normalisation).  The source
  text is not stored in the record: it is re-read from the report file the
  record names (``input_meta.file``) or from ``--reports`` and must hash to the
  record's ``input_sha``; a record whose source cannot be found or changed is
  *unverifiable*, counted apart, never silently passed; unsupported claims whose
  value the prompt itself shows as an example are counted as *copied from the
  prompt* (:mod:`kemm.knowledge.review.prompt_copies`);
- **coverage** — share of ``"not reported"`` per field;
- **duplicates** — statements repeated within a record, and boilerplate
  statements repeated across records.

Metrics (for ``--fail-under``): ``parse_rate`` (ok / (ok + failed)),
``ok_rate`` (ok / all), ``faithfulness`` (share of checked records with no
unsupported claim), ``claim_support`` (share of claims supported),
``verifiable`` (share of ok records whose source was found); reported but not
thresholdable: ``truncation`` (share of records cut by the token limit).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from pydantic import BaseModel, ValidationError

from kemm.knowledge.generate.schemas import get_schema
from kemm.knowledge.records import (
    AuditDuplicates,
    AuditFaithfulness,
    AuditValidity,
    CacheRecord,
    CopiedFromPrompt,
    KindCount,
    Stats,
)
from kemm.knowledge.review.claims import Claim, SourceFacts, check_output
from kemm.knowledge.review.prompt_copies import copied_claims, manifest_examples
from kemm.knowledge.review.source_texts import AuditError, SourceTexts
from kemm.knowledge.rules.staging import NOT_REPORTED, REFINED_FIELDS
from kemm.knowledge.store.cache import SourceCache
from kemm.knowledge.store.inputs import DEFAULT_ID_COLUMN, DEFAULT_TEXT_COLUMN

__all__ = ["REFINED_FIELDS", "AuditError", "AuditReport", "RecordAudit", "audit_source", "failed_thresholds",
           "parse_thresholds"]

METRICS = ("parse_rate", "ok_rate", "faithfulness", "claim_support", "verifiable")  # higher is better
TRUNCATION_REASONS = ("length", "max_tokens", "truncated")


# --------------------------------------------------------------------------- results
@dataclass
class RecordAudit:
    case_id: str
    status: str
    claims: list[Claim] = field(default_factory=list)
    source_text: str | None = None
    unverifiable: str | None = None
    output: dict[str, Any] | None = None
    duplicates: list[str] = field(default_factory=list)

    @property
    def unsupported(self) -> list[Claim]:
        return [c for c in self.claims if not c.supported]

    def as_dict(self, with_source: bool = False) -> dict[str, Any]:
        d = {
            "case_id": self.case_id,
            "status": self.status,
            "n_claims": len(self.claims),
            "n_unsupported": len(self.unsupported),
            "unsupported": [c.as_dict() for c in self.unsupported],
            "unverifiable": self.unverifiable,
            "duplicate_statements": self.duplicates,
        }
        if with_source:
            d["source_text"] = self.source_text
            d["output"] = self.output
        return d


@dataclass
class AuditReport:
    source: str
    task: str
    manifest: dict[str, Any]
    validity: AuditValidity
    faithfulness: AuditFaithfulness | None
    coverage: dict[str, float]
    duplicates: AuditDuplicates
    metrics: dict[str, float]
    records: list[RecordAudit]

    @property
    def flagged(self) -> list[RecordAudit]:
        return [r for r in self.records if r.unsupported]

    def as_dict(self) -> dict[str, Any]:
        ident = self.manifest.get("identity", {})
        return {
            "source": self.source,
            "task": self.task,
            "identity": {k: ident.get(k) for k in ("backend", "model_id", "prompt_name", "prompt_version", "prompt_sha")},
            "metrics": self.metrics,
            "validity": self.validity.to_json(),
            "faithfulness": None if self.faithfulness is None else self.faithfulness.model_dump(mode="json"),
            "coverage": self.coverage,
            "duplicates": self.duplicates.model_dump(mode="json"),
            "flagged": [r.as_dict() for r in self.flagged],
            "unverifiable": [{"case_id": r.case_id, "reason": r.unverifiable} for r in self.records if r.unverifiable],
        }


def _norm_statement(s: str) -> str:
    return re.sub(r"\W+", " ", s.lower()).strip()


def _stats(xs: list[float]) -> Stats:
    if not xs:
        return Stats(n=0)
    s = sorted(xs)
    return Stats(n=len(s), mean=round(mean(s), 2), min=s[0], median=s[len(s) // 2], max=s[-1])


# --------------------------------------------------------------------------- audit
def audit_source(
    cache_dir: Path | str,
    source: str,
    reports: list[Path] | None = None,
    id_column: str = DEFAULT_ID_COLUMN,
    text_column: str = DEFAULT_TEXT_COLUMN,
) -> AuditReport:
    sc = SourceCache(cache_dir, source)
    man = sc.read_manifest()
    ident = man.get("identity", {})
    task = ident.get("task") or "refine_report"
    schema = get_schema(ident.get("schema_name") or ("PrognosticKnowledge" if task == "pbk" else "RefinedReport"))
    loaded = sc.load()
    recs = sorted(sc.by_case().values(), key=lambda r: str(r.case_id))
    parsed, invalid_ok = _parse_ok(recs, schema)
    validity = _validity(recs, parsed, invalid_ok, len(loaded.corrupt_lines))
    within, duplicates = _duplicates(parsed)
    coverage: dict[str, float] = {}
    if task == "refine_report" and parsed:
        for f in REFINED_FIELDS:
            nr = sum(1 for m in parsed.values() if getattr(m, f) == NOT_REPORTED)
            coverage[f] = round(nr / len(parsed), 4)
    faith = None
    if task == "refine_report":
        texts = SourceTexts(reports, id_column, text_column, base_dirs=[Path(cache_dir).resolve().parent, Path.cwd()])
        audits = [_record_audit(r, parsed, within, texts) for r in recs]
        faith = _faithfulness(audits, parsed)
        faith.copied_from_prompt = _copied_from_prompt(audits, parsed, manifest_examples(man))
    else:
        audits = [RecordAudit(case_id=r.case_id, status=r.status, output=r.output) for r in recs]
    metrics = _metrics(recs, validity, faith, parsed)
    return AuditReport(source, task, man, validity, faith, coverage, duplicates, metrics, audits)


def _parse_ok(recs: list[CacheRecord], schema: type[BaseModel]) -> tuple[dict[str, Any], list[str]]:
    """Ok outputs re-validated against the schema, and the ok records that no longer validate."""
    parsed: dict[str, Any] = {}
    invalid_ok: list[str] = []
    for r in recs:
        if r.status != "ok":
            continue
        try:
            parsed[r.case_id] = schema.model_validate(r.output or {})
        except ValidationError:
            invalid_ok.append(r.case_id)  # an ok record that no longer validates (schema changed?)
    return parsed, invalid_ok


def _validity(recs: list[CacheRecord], parsed: dict[str, Any], invalid_ok: list[str], corrupt: int) -> AuditValidity:
    status = Counter(r.status for r in recs)
    generated = [r for r in recs if r.status != "skipped"]
    attempts = Counter(int(r.attempts or 0) for r in generated)
    finish = Counter(str(r.finish_reason or "none") for r in generated)
    errors: Counter[str] = Counter()
    for r in recs:
        if r.status == "failed":
            for e in (r.errors or ["(no error recorded)"])[-1:]:
                errors[re.sub(r"\s+", " ", str(e))[:160]] += 1
    sts = [m.statements() for m in parsed.values()]
    return AuditValidity(
        records=len(recs),
        ok=status.get("ok", 0),
        failed=status.get("failed", 0),
        skipped=status.get("skipped", 0),
        corrupt_lines=corrupt,
        attempts=dict(sorted(attempts.items())),
        finish_reasons=dict(finish.most_common()),
        truncated=sorted(r.case_id for r in recs if str(r.finish_reason) in TRUNCATION_REASONS),
        top_errors=errors.most_common(8),
        failed_cases=sorted(r.case_id for r in recs if r.status == "failed"),
        ok_but_invalid=invalid_ok,
        statements_per_record=_stats([len(x) for x in sts]),
        statement_chars=_stats([len(s) for x in sts for s in x]),
        statement_words=_stats([len(s.split()) for x in sts for s in x]),
    )


def _duplicates(parsed: dict[str, Any]) -> tuple[dict[str, list[str]], AuditDuplicates]:
    """Statements each record repeats (by case id), and the section of the report."""
    within: dict[str, list[str]] = {}
    across: Counter[str] = Counter()
    for cid, m in parsed.items():
        seen: dict[str, str] = {}
        dups = []
        for s in m.statements():
            k = _norm_statement(s)
            if k in seen:
                dups.append(s)
            seen.setdefault(k, s)
        if dups:
            within[cid] = dups
        for k in seen:
            across[k] += 1
    return within, AuditDuplicates(
        records_with_repeated_statements=len(within),
        share_records_with_repeats=round(len(within) / len(parsed), 4) if parsed else None,
        common_statements=[(s, n) for s, n in across.most_common(10) if n > 1],
    )


def _record_audit(r: CacheRecord, parsed: dict[str, Any], within: dict[str, list[str]],
                  texts: SourceTexts) -> RecordAudit:
    """One record's claims checked against its source report (or why that was impossible)."""
    ra = RecordAudit(case_id=r.case_id, status=r.status, output=r.output)
    ra.duplicates = within.get(r.case_id, [])
    if r.case_id in parsed:
        text, why = texts.get(r)
        if text is None:
            ra.unverifiable = why
        else:
            ra.source_text = text
            ra.claims = check_output(parsed[r.case_id].model_dump(), text, SourceFacts.from_text(text))
    return ra


def _faithfulness(audits: list[RecordAudit], parsed: dict[str, Any]) -> AuditFaithfulness:
    kinds_total: Counter[str] = Counter()
    kinds_bad: Counter[str] = Counter()
    bad_values: Counter[str] = Counter()
    for a in audits:
        for c in a.claims:
            kinds_total[c.kind] += 1
            if not c.supported:
                kinds_bad[c.kind] += 1
                bad_values[f"{c.kind}: {c.value}"] += 1
    checked = [a for a in audits if a.case_id in parsed and a.unverifiable is None]
    n_claims = sum(len(a.claims) for a in checked)
    n_sup = sum(1 for a in checked for c in a.claims if c.supported)
    unver = [a for a in audits if a.unverifiable]
    return AuditFaithfulness(
        checked_records=len(checked),
        unverifiable_records=len(unver),
        unverifiable_reasons=Counter(re.sub(r"case \S+ ", "case … ", a.unverifiable or "") for a in unver).most_common(5),
        records_with_unsupported=sum(1 for a in checked if a.unsupported),
        faithfulness=round(sum(1 for a in checked if not a.unsupported) / len(checked), 4) if checked else None,
        claims=n_claims,
        supported_claims=n_sup,
        claim_support=round(n_sup / n_claims, 4) if n_claims else None,
        records_without_claims=sum(1 for a in checked if not a.claims),
        empty_source_records=sorted(a.case_id for a in checked if sum(ch.isalnum() for ch in a.source_text or "") < 50),
        by_kind={k: KindCount(claims=kinds_total[k], unsupported=kinds_bad[k]) for k in sorted(kinds_total)},
        top_unsupported=bad_values.most_common(12),
    )


def _copied_from_prompt(audits: list[RecordAudit], parsed: dict[str, Any],
                        examples: set[str] | None) -> CopiedFromPrompt:
    """Checked records with an unsupported claim whose value the prompt shows as an example
    (``examples`` None: the prompt the source was built with could not be loaded)."""
    checked = [a for a in audits if a.case_id in parsed and a.unverifiable is None]
    copied: dict[str, list[str]] = {}
    for a in checked:
        hits = copied_claims(a.claims, examples) if examples else []
        if hits:
            copied[a.case_id] = [f"{c.where}: {c.value}" for c in hits]
    return CopiedFromPrompt(
        prompt_examples=sorted(examples) if examples is not None else None,
        records=len(copied),
        rate=round(len(copied) / len(checked), 4) if checked and examples is not None else None,
        claims=sum(len(v) for v in copied.values()),
        top=Counter(x.split(": ", 1)[1] for v in copied.values() for x in v).most_common(8),
        cases=dict(sorted(copied.items())[:50]),
    )


def _metrics(recs: list[CacheRecord], v: AuditValidity, faith: AuditFaithfulness | None,
             parsed: dict[str, Any]) -> dict[str, float]:
    metrics: dict[str, float] = {
        "parse_rate": round(v.ok / (v.ok + v.failed), 4) if (v.ok + v.failed) else 0.0,
        "ok_rate": round(v.ok / len(recs), 4) if recs else 0.0,
        "truncation": round(len(v.truncated) / len(recs), 4) if recs else 0.0,
    }
    if faith is not None:
        if faith.faithfulness is not None:
            metrics["faithfulness"] = faith.faithfulness
        if faith.claim_support is not None:
            metrics["claim_support"] = faith.claim_support
        metrics["verifiable"] = round(faith.checked_records / len(parsed), 4) if parsed else 0.0
    return metrics


def parse_thresholds(items: list[str]) -> dict[str, float]:
    """``["faithfulness=0.98", ...]`` -> {metric: value}; unknown metrics are an error."""
    out: dict[str, float] = {}
    for it in items:
        if "=" not in it:
            raise AuditError(f"--fail-under {it!r}: expected METRIC=VALUE, e.g. faithfulness=0.98")
        k, v = (s.strip() for s in it.split("=", 1))
        if k not in METRICS:
            raise AuditError(f"--fail-under {it!r}: unknown metric {k!r}; metrics: {', '.join(METRICS)}")
        try:
            out[k] = float(v)
        except ValueError:
            raise AuditError(f"--fail-under {it!r}: {v!r} is not a number") from None
    return out


def failed_thresholds(report: AuditReport, thresholds: dict[str, float]) -> list[str]:
    """Messages for every metric below its threshold (a metric the audit could not
    compute, e.g. faithfulness of a PBK source, counts as failing)."""
    out = []
    for k, v in thresholds.items():
        got = report.metrics.get(k)
        if got is None:
            out.append(f"{k}: not computed for source {report.source!r} (task {report.task}) < {v}")
        elif got < v:
            out.append(f"{k} {got:.4f} < {v}")
    return out
