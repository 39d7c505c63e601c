"""Import outputs another LLM already produced as a kemm knowledge source.

Formats:

- ``tcga-path-report`` — the tcga-path-report CSVs: ``llm_output`` holds six
  fields (site, laterality, histology, stage, grade, behavior) as lines such as
  ``4. "Stage": T2N0Mx. Justified as ...`` or ``Stage: T2 N0 MX`` followed by
  ``Justification: ...``.  They are mapped onto :class:`RefinedReport`
  (histology -> histologic_type, the TNM string -> pT/pN/pM, "Stage II" ->
  stage_group, grade -> Grade; site, laterality and behavior become key
  statements; everything else "not reported").  The source report for the
  audit is the ``ocr_text`` of the same row, recorded as ``input_meta.file`` +
  ``row``.
- ``jsonl`` — one JSON object per line: ``case_id`` plus the RefinedReport
  fields; an optional ``report_text`` (or ``--text-key``) carries the source
  report text so that the audit can check it.

Provenance: backend ``import``, model as declared (``--model-name``, default
"unknown (as published)"), prompt identity ``import:<format>``, the import
file's sha256.  Rows that do not parse or validate become failure records with
their raw text and errors — never silent drops.  Several rows of one patient:
the first that parses is kept, and the count is recorded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kemm._io import file_sha256
from kemm.knowledge.errors import KnowledgeError
from kemm.knowledge.generate.schemas import RefinedReport, schema_sha
from kemm.knowledge.records import CacheRecord, Status
from kemm.knowledge.store.cache import SourceCache, now_iso, record_key, sha256_text
from kemm.knowledge.store.inputs import DEFAULT_ID_COLUMN, TCGA_BARCODE, read_rows
from kemm.knowledge.store.llm_output import TCGA_FIELDS, parse_tcga_llm_output, tcga_fields_to_report

FORMATS = ("tcga-path-report", "jsonl")
DEFAULT_MODEL_NAME = "unknown (as published)"


class ImportFormatError(KnowledgeError):
    """An import file that cannot be read at all (rows that fail are records, not errors)."""


@dataclass
class ImportSummary:
    source: str
    format: str
    rows: int = 0
    cases: int = 0
    ok: int = 0
    failed: int = 0
    written: int = 0
    unchanged: int = 0
    patients_with_several_rows: int = 0
    file_sha256: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def parse_rate(self) -> float:
        return self.ok / (self.ok + self.failed) if (self.ok + self.failed) else 0.0


def import_identity(fmt: str, model_name: str) -> dict[str, Any]:
    return {
        "task": "refine_report",
        "prompt_name": f"import:{fmt}",
        "prompt_version": None,
        "prompt_sha": f"import:{fmt}",
        "schema_name": "RefinedReport",
        "schema_sha": schema_sha(RefinedReport),
        "backend": "import",
        "model_id": model_name,
        "model_revision": None,
        "sampling": None,
    }


# --------------------------------------------------------------------------- import
def _validate(d: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    try:
        return RefinedReport.model_validate(d).model_dump(mode="json"), []
    except ValidationError as e:
        return None, [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]


def _parse_tcga_row(row: dict[str, Any], llm_column: str) -> tuple[dict[str, Any] | None, list[str]]:
    raw = str(row.get(llm_column) or "")
    if not raw.strip():
        return None, [f"empty {llm_column!r}"]
    fields, problems = parse_tcga_llm_output(raw)
    if len(problems) == len(TCGA_FIELDS):
        return None, ["no 'Site/Laterality/Histology/Stage/Grade/Behavior' lines found in the LLM output"]
    out, errs = _validate(tcga_fields_to_report(fields))
    if out is None:
        return None, problems + errs
    return out, problems  # some fields missing is still a parse: they stay "not reported"


def import_file(
    path: Path | str,
    fmt: str,
    source: str,
    cache_dir: Path | str,
    model_name: str = DEFAULT_MODEL_NAME,
    id_column: str = DEFAULT_ID_COLUMN,
    text_column: str = "ocr_text",
    llm_column: str = "llm_output",
    text_key: str = "report_text",
) -> ImportSummary:
    path = Path(path)
    if fmt not in FORMATS:
        raise ImportFormatError(f"unknown import format {fmt!r}; formats: {', '.join(FORMATS)}")
    if not path.is_file():
        raise ImportFormatError(f"{path}: no such file")
    sha = file_sha256(path)
    summary = ImportSummary(source=source, format=fmt, file_sha256=sha)
    identity = import_identity(fmt, model_name)
    sc = SourceCache(cache_dir, source)
    sc.ensure_identity(identity, {"import_file": str(path), "import_sha256": sha, "import_format": fmt,
                                  "declared_model": model_name})
    records = _tcga_records(path, id_column, text_column, llm_column, summary) if fmt == "tcga-path-report" \
        else _jsonl_records(path, text_key, summary)
    for r in records:
        r.key = record_key(identity, canonical_input(r))
        r.input_meta["import_sha256"] = sha
    existing = sc.load().records
    with sc.writer(identity) as w:
        for r in records:
            summary.cases += 1
            summary.ok += r.status == "ok"
            if r.status == "failed":
                summary.failed += 1
                summary.failures.append(r.case_id)
            old = existing.get(r.key)
            if old is not None and old.status == r.status and old.output == r.output:
                summary.unchanged += 1
                continue
            w.append(r)
            summary.written += 1
    sc.update_counts({"last_import": {"at": now_iso(), "file": str(path), "sha256": sha, "rows": summary.rows,
                                      "ok": summary.ok, "failed": summary.failed,
                                      "patients_with_several_rows": summary.patients_with_several_rows}})
    return summary


def canonical_input(rec: CacheRecord) -> str:
    """What the key hashes: the imported raw text and the source text's sha."""
    return json.dumps({"raw": rec.raw_output, "input_sha": rec.input_sha, "case": rec.case_id}, sort_keys=True)


def _base_record(case_id: str, status: Status, raw: str, output: dict[str, Any] | None, errors: list[str],
                 meta: dict[str, Any], input_sha: str | None) -> CacheRecord:
    """An imported record; its key is set once the whole file is read (``import_file``)."""
    return CacheRecord(key="", case_id=case_id, status=status, input_sha=input_sha, raw_output=raw, output=output,
                       errors=errors, attempts=1, finish_reason="imported", latency_s=0.0, input_meta=meta,
                       created=now_iso())


def _tcga_records(path: Path, id_column: str, text_column: str, llm_column: str, summary: ImportSummary) -> list[CacheRecord]:
    rows = read_rows(path)
    if not rows:
        raise ImportFormatError(f"{path}: no rows")
    for col in (id_column, llm_column):
        if col not in rows[0]:
            raise ImportFormatError(f"{path}: no column {col!r}; columns are {list(rows[0])[:12]} (use --id-column / --llm-column)")
    summary.rows = len(rows)
    by_case: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        raw_id = str(row.get(id_column) or "").strip()
        cid = raw_id[:12] if id_column == DEFAULT_ID_COLUMN else raw_id
        if not cid or (id_column == DEFAULT_ID_COLUMN and not TCGA_BARCODE.match(cid)):
            cid = f"row-{i + 2}"  # kept as a failure below, never dropped
        by_case.setdefault(cid, []).append(i)
    out = []
    for cid, idxs in by_case.items():
        if len(idxs) > 1:
            summary.patients_with_several_rows += 1
        chosen, errs_all = None, []
        for i in idxs:
            parsed, errs = _parse_tcga_row(rows[i], llm_column)
            if parsed is not None:
                chosen = (i, parsed, errs)
                break
            errs_all += [f"row {i + 2}: {e}" for e in errs]
        i = chosen[0] if chosen else idxs[0]
        src = str(rows[i].get(text_column) or "").strip() if text_column in rows[i] else ""
        meta = {"file": str(path), "row": i, "csv_line_row": i + 2, "id_column": id_column, "text_column": text_column,
                "n_rows_for_case": len(idxs), "format": "tcga-path-report"}
        raw = str(rows[i].get(llm_column) or "")
        if cid.startswith("row-"):
            out.append(_base_record(cid, "failed", raw, None, [f"row {i + 2}: {id_column!r} is not a TCGA patient barcode"],
                                    meta, sha256_text(src)))
        elif chosen:
            _, parsed, warn = chosen
            meta["missing_fields"] = warn
            rec = _base_record(cid, "ok", raw, parsed, [], meta, sha256_text(src))
            if any("'behavior'" in w for w in warn):
                rec.finish_reason = "truncated"  # the published text stops before its last field
            out.append(rec)
        else:
            out.append(_base_record(cid, "failed", raw, None, errs_all, meta, sha256_text(src)))
    return out


def _jsonl_records(path: Path, text_key: str, summary: ImportSummary) -> list[CacheRecord]:
    out: list[CacheRecord] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            summary.rows += 1
            meta = {"file": str(path), "line": ln, "format": "jsonl", "text_key": text_key}
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            except (json.JSONDecodeError, ValueError) as e:
                out.append(_base_record(f"line-{ln}", "failed", line.rstrip("\n"), None,
                                        [f"line {ln}: not a JSON object ({e})"], meta, None))
                continue
            cid = str(obj.get("case_id") or "").strip()
            if not cid:
                out.append(_base_record(f"line-{ln}", "failed", line.rstrip("\n"), None,
                                        [f"line {ln}: no 'case_id'"], meta, None))
                continue
            if cid in seen:
                summary.patients_with_several_rows += 1
                continue  # the first line of a case wins, as for CSV rows
            seen[cid] = ln
            src = obj.get(text_key)
            meta["source_text"] = "present" if src else "absent"
            fields = {k: v for k, v in obj.items() if k not in ("case_id", text_key)}
            parsed, errs = _validate(fields)
            sha = sha256_text(str(src).strip()) if src else None
            if src:
                meta["report_text"] = str(src)  # no other copy of the source exists for a JSONL import
            out.append(_base_record(cid, "ok" if parsed else "failed", line.rstrip("\n"), parsed,
                                    [f"line {ln}: {e}" for e in errs], meta, sha))
    return out
