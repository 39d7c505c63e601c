"""Audit a knowledge source before any model sees it.

Checks, in the order a careful reader makes them:

- **validity** — ok / failed / skipped, attempts, finish reasons (``length`` =
  truncated), statement counts and lengths, the commonest errors;
- **faithfulness** (refine_report only) — every number, size, count and
  staging/grade code of each ok output must occur in the record's source
  report (see :mod:`kemm.knowledge.claims` for the normalisation).  The source
  text is not stored in the record: it is re-read from the report file the
  record names (``input_meta.file``) or from ``--reports`` and must hash to the
  record's ``input_sha``; a record whose source cannot be found or changed is
  *unverifiable*, counted apart, never silently passed;
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

from kemm.knowledge.errors import KnowledgeError

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from kemm.knowledge.cache import SourceCache, sha256_text
from kemm.knowledge.claims import Claim, SourceFacts, check_output
from kemm.knowledge.review.prompt_copies import COPIED, copied_claims, manifest_examples
from kemm.knowledge.inputs import DEFAULT_ID_COLUMN, DEFAULT_TEXT_COLUMN, REPORT_SEPARATOR, InputError, _read_rows
from kemm.knowledge.schemas import NOT_REPORTED, get_schema

REFINED_FIELDS = (
    "histologic_type", "grade", "pT", "pN", "pM", "stage_group", "tumor_size", "nodes_positive",
    "nodes_examined", "margin_status", "lymphovascular_invasion", "perineural_invasion",
)
METRICS = ("parse_rate", "ok_rate", "faithfulness", "claim_support", "verifiable")  # higher is better
TRUNCATION_REASONS = ("length", "max_tokens", "truncated")


class AuditError(KnowledgeError):
    pass


# --------------------------------------------------------------------------- source texts
class SourceTexts:
    """Finds the report text a record was built from, by file and case id, checked by sha."""

    def __init__(
        self,
        reports: list[Path] | None = None,
        id_column: str = DEFAULT_ID_COLUMN,
        text_column: str = DEFAULT_TEXT_COLUMN,
        base_dirs: list[Path] | None = None,
    ):
        self.explicit = [Path(p) for p in reports or []]
        self.id_column = id_column
        self.text_column = text_column
        self.base_dirs = base_dirs or []
        self._files: dict[tuple[str, str, str], dict[str, Any]] = {}
        for p in self.explicit:
            if not p.is_file():
                raise AuditError(f"--reports {p}: no such file")

    def _resolve(self, file: str) -> Path | None:
        p = Path(file)
        if p.is_file():
            return p
        for b in self.base_dirs:
            if (b / p).is_file():
                return b / p
        return None

    def _load(self, path: Path, id_col: str, text_col: str) -> dict[str, Any]:
        k = (str(path.resolve()), id_col, text_col)
        if k not in self._files:
            rows = _read_rows(path)
            by_case: dict[str, list[str]] = {}
            row_text: dict[int, str] = {}
            if rows and (id_col not in rows[0] or text_col not in rows[0]):
                raise AuditError(f"{path}: needs columns {id_col!r} and {text_col!r}; it has {list(rows[0])[:12]}")
            for i, r in enumerate(rows):
                raw = str(r.get(id_col) or "").strip()
                cid = raw[:12] if id_col == DEFAULT_ID_COLUMN else raw
                t = "" if r.get(text_col) is None else str(r.get(text_col))
                row_text[i] = t
                by_case.setdefault(cid, []).append(t)
            self._files[k] = {"by_case": by_case, "rows": row_text}
        return self._files[k]

    def _candidates(self, path: Path, case_id: str, row: int | None, id_col: str, text_col: str) -> list[str]:
        d = self._load(path, id_col, text_col)
        out = []
        texts = d["by_case"].get(case_id, [])
        if texts:
            out.append(REPORT_SEPARATOR.join(t.strip() for t in texts if t and t.strip()))
            out += [t.strip() for t in texts]
        out = [t for t in out if t]
        if row is not None and row in d["rows"]:
            # The record's own row, also when its text is empty: output about an empty report
            # is then checked against nothing, and every claim is unsupported.
            out.insert(0, d["rows"][row].strip())
        return out

    def get(self, rec: dict[str, Any]) -> tuple[str | None, str | None]:
        """(text, None) or (None, why not).  A record without ``input_sha`` (an import
        that carried no report) accepts the first text found, marked unchecked."""
        meta = rec.get("input_meta") or {}
        cid = str(rec.get("case_id"))
        id_col = meta.get("id_column", self.id_column)
        text_col = meta.get("text_column", self.text_column)
        cands: list[str] = []
        tried: list[str] = []
        for p in self.explicit:
            cands += self._candidates(p, cid, None, self.id_column, self.text_column)
            tried.append(str(p))
        if meta.get("report_text"):  # a JSONL import that carried its report
            cands.append(str(meta["report_text"]).strip())
        if meta.get("file") and meta.get("format") != "jsonl":
            p = self._resolve(meta["file"])
            tried.append(str(meta["file"]) + ("" if p else " (missing)"))
            if p is not None:
                try:
                    cands += self._candidates(p, cid, meta.get("row"), id_col, text_col)
                except (InputError, AuditError, OSError) as e:
                    tried[-1] += f" ({e})"
        if not cands:
            where = ", ".join(tried) if tried else "no report file recorded; pass --reports FILE"
            return None, f"source report of case {cid} not found ({where})"
        want = rec.get("input_sha")
        if not want:
            return cands[0], None
        for t in cands:
            if sha256_text(t) == want:
                return t, None
        return None, f"source text of case {cid} differs from the one the record was built from (input_sha mismatch)"


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
    validity: dict[str, Any]
    faithfulness: dict[str, Any] | None
    coverage: dict[str, float]
    duplicates: dict[str, Any]
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
            "validity": self.validity,
            "faithfulness": self.faithfulness,
            "coverage": self.coverage,
            "duplicates": self.duplicates,
            "flagged": [r.as_dict() for r in self.flagged],
            "unverifiable": [{"case_id": r.case_id, "reason": r.unverifiable} for r in self.records if r.unverifiable],
        }


def _norm_statement(s: str) -> str:
    return re.sub(r"\W+", " ", s.lower()).strip()


def _stats(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    s = sorted(xs)
    return {"n": len(s), "mean": round(mean(s), 2), "min": s[0], "median": s[len(s) // 2], "max": s[-1]}


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
    recs = list(sc.by_case().values())
    recs.sort(key=lambda r: str(r["case_id"]))

    # -- validity
    status = Counter(r["status"] for r in recs)
    attempts = Counter(int(r.get("attempts") or 0) for r in recs if r["status"] != "skipped")
    finish = Counter(str(r.get("finish_reason") or "none") for r in recs if r["status"] != "skipped")
    truncated = sorted(r["case_id"] for r in recs if str(r.get("finish_reason")) in TRUNCATION_REASONS)
    errors = Counter()
    for r in recs:
        if r["status"] == "failed":
            for e in (r.get("errors") or ["(no error recorded)"])[-1:]:
                errors[re.sub(r"\s+", " ", str(e))[:160]] += 1
    n_stmts: list[float] = []
    len_chars: list[float] = []
    len_words: list[float] = []
    parsed: dict[str, Any] = {}
    invalid_ok: list[str] = []
    for r in recs:
        if r["status"] != "ok":
            continue
        try:
            m = schema.model_validate(r.get("output") or {})
        except Exception:
            invalid_ok.append(r["case_id"])  # an ok record that no longer validates (schema changed?)
            continue
        parsed[r["case_id"]] = m
        sts = m.statements()
        n_stmts.append(len(sts))
        len_chars += [len(s) for s in sts]
        len_words += [len(s.split()) for s in sts]
    n_ok, n_failed, n_skipped = status.get("ok", 0), status.get("failed", 0), status.get("skipped", 0)
    validity = {
        "records": len(recs),
        "ok": n_ok,
        "failed": n_failed,
        "skipped": n_skipped,
        "corrupt_lines": len(loaded.corrupt_lines),
        "attempts": dict(sorted(attempts.items())),
        "finish_reasons": dict(finish.most_common()),
        "truncated": truncated,
        "top_errors": errors.most_common(8),
        "failed_cases": sorted(r["case_id"] for r in recs if r["status"] == "failed"),
        "ok_but_invalid": invalid_ok,
        "statements_per_record": _stats(n_stmts),
        "statement_chars": _stats(len_chars),
        "statement_words": _stats(len_words),
    }

    # -- duplicates
    within: dict[str, list[str]] = {}
    across = Counter()
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
    duplicates = {
        "records_with_repeated_statements": len(within),
        "share_records_with_repeats": round(len(within) / len(parsed), 4) if parsed else None,
        "common_statements": [(s, n) for s, n in across.most_common(10) if n > 1],
    }

    # -- coverage
    coverage: dict[str, float] = {}
    if task == "refine_report" and parsed:
        for f in REFINED_FIELDS:
            nr = sum(1 for m in parsed.values() if getattr(m, f) == NOT_REPORTED)
            coverage[f] = round(nr / len(parsed), 4)

    # -- faithfulness
    audits: list[RecordAudit] = []
    faith = None
    if task == "refine_report":
        texts = SourceTexts(reports, id_column, text_column, base_dirs=[Path(cache_dir).resolve().parent, Path.cwd()])
        kinds_total, kinds_bad, bad_values = Counter(), Counter(), Counter()
        examples = manifest_examples(man)  # values the prompt shows; None if the prompt is not found
        copied: dict[str, list[str]] = {}
        for r in recs:
            ra = RecordAudit(case_id=r["case_id"], status=r["status"], output=r.get("output"))
            ra.duplicates = within.get(r["case_id"], [])
            if r["case_id"] in parsed:
                text, why = texts.get(r)
                if text is None:
                    ra.unverifiable = why
                else:
                    ra.source_text = text
                    ra.claims = check_output(parsed[r["case_id"]].model_dump(), text, SourceFacts.from_text(text))
                    if examples:
                        hits = copied_claims(ra.claims, examples)
                        if hits:
                            copied[r["case_id"]] = [f"{c.where}: {c.value}" for c in hits]
                    for c in ra.claims:
                        kinds_total[c.kind] += 1
                        if not c.supported:
                            kinds_bad[c.kind] += 1
                            bad_values[f"{c.kind}: {c.value}"] += 1
            audits.append(ra)
        checked = [a for a in audits if a.case_id in parsed and a.unverifiable is None]
        n_claims = sum(len(a.claims) for a in checked)
        n_sup = sum(1 for a in checked for c in a.claims if c.supported)
        unver = [a for a in audits if a.unverifiable]
        faith = {
            "checked_records": len(checked),
            "unverifiable_records": len(unver),
            "unverifiable_reasons": Counter(re.sub(r"case \S+ ", "case … ", a.unverifiable or "") for a in unver).most_common(5),
            "records_with_unsupported": sum(1 for a in checked if a.unsupported),
            "faithfulness": round(sum(1 for a in checked if not a.unsupported) / len(checked), 4) if checked else None,
            "claims": n_claims,
            "supported_claims": n_sup,
            "claim_support": round(n_sup / n_claims, 4) if n_claims else None,
            "records_without_claims": sum(1 for a in checked if not a.claims),
            "empty_source_records": sorted(a.case_id for a in checked if sum(ch.isalnum() for ch in a.source_text or "") < 50),
            "by_kind": {k: {"claims": kinds_total[k], "unsupported": kinds_bad[k]} for k in sorted(kinds_total)},
            "top_unsupported": bad_values.most_common(12),
            COPIED: {
                "prompt_examples": sorted(examples) if examples is not None else None,
                "records": len(copied),
                "rate": round(len(copied) / len(checked), 4) if checked and examples is not None else None,
                "claims": sum(len(v) for v in copied.values()),
                "top": Counter(x.split(": ", 1)[1] for v in copied.values() for x in v).most_common(8),
                "cases": dict(sorted(copied.items())[:50]),
            },
        }
    else:
        audits = [RecordAudit(case_id=r["case_id"], status=r["status"], output=r.get("output")) for r in recs]

    metrics: dict[str, float] = {
        "parse_rate": round(n_ok / (n_ok + n_failed), 4) if (n_ok + n_failed) else 0.0,
        "ok_rate": round(n_ok / len(recs), 4) if recs else 0.0,
        "truncation": round(len(truncated) / len(recs), 4) if recs else 0.0,
    }
    if faith is not None:
        if faith["faithfulness"] is not None:
            metrics["faithfulness"] = faith["faithfulness"]
        if faith["claim_support"] is not None:
            metrics["claim_support"] = faith["claim_support"]
        metrics["verifiable"] = round(faith["checked_records"] / len(parsed), 4) if parsed else 0.0
    return AuditReport(source, task, man, validity, faith, coverage, duplicates, metrics, audits)


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
