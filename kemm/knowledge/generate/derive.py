"""Derived knowledge sources: statements written from another source's validated outputs.

A derived source is an ordinary source in the cache (manifest + ``records.jsonl``, one record
per case), so ``kemm-knowledge embed``/``show``/``ls`` and ``read_embeddings`` work on it as
on any other. Its statements come from a versioned template set instead of an LLM:

- ``fields``: one sentence per reported field of each refined report
  (:mod:`kemm.knowledge.rules.field_sentences`), schema ``FieldStatements``;
- ``grounded-pbk``: the PBK factors of the patient's cancer type that the patient's refined
  report activates, plus the risk-level statement that applies
  (:mod:`kemm.knowledge.rules.grounding`), schema ``GroundedKnowledge``;
- ``report-sentences``: the report's own diagnostic sentences, from the report files
  themselves rather than a source (:mod:`kemm.knowledge.rules.report_sentences`), schema
  ``FieldStatements`` with kind ``report``; its "parent" is the report texts (sha per case).

Identity: task, template version and the sha256 of the template module (``prompt_*``), the
schema, ``backend="derive"``, the parent source name(s) (``model_id``) and the parents' content
identity (``model_revision``: sha256 over every ok output per case). A rebuild with nothing
changed writes nothing; an interrupted one resumes. A parent that changed since the derived
source was written is refused with the counts of what changed: derive into a new source name.
A case whose report yields no statement gets a ``skipped`` record with the reason (masked by
the model), never an empty list.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from kemm.knowledge.api import read_outputs
from kemm.knowledge.records import CacheRecord
from kemm.knowledge.store.cache import CacheError, SourceCache, canonical_json, now_iso, record_key, sha256_text
from kemm.knowledge.store.inputs import cancer_type_for_file
from kemm.knowledge.rules import field_sentences as fs_mod
from kemm.knowledge.rules import grounding as gr_mod
from kemm.knowledge.rules import report_sentences as rs_mod
from kemm.knowledge.rules.field_sentences import FIELD_SENTENCES_VERSION, field_sentences
from kemm.knowledge.rules.grounding import GROUNDING_VERSION, ground_factors, risk_level
from kemm.knowledge.rules.report_sentences import KIND as SENTENCE_KIND
from kemm.knowledge.rules.report_sentences import REPORT_SENTENCES_VERSION, report_sentences
from kemm.knowledge.generate.schemas import (
    FieldStatements,
    GroundedKnowledge,
    PrognosticKnowledge,
    get_schema,
    schema_sha,
)

DERIVED_TASKS = ("derive_fields", "derive_grounded_pbk", "derive_report_sentences")


class DeriveError(CacheError):
    """A derived source cannot be written from these parents (changed parent, wrong schema, ...)."""


@dataclass
class DeriveSummary:
    source: str
    total: int = 0
    ok: int = 0
    skipped: int = 0
    cached: int = 0
    written: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def line(self) -> str:
        """One log line: ``411 cases: 398 ok, 13 skipped (13 no field ...); 0 cached, 398 written``."""
        reasons = "; ".join(f"{n} {r}" for r, n in sorted(self.skip_reasons.items(), key=lambda x: -x[1]))
        return (f"{self.total} cases: {self.ok} ok, {self.skipped} skipped{f' ({reasons})' if reasons else ''}; "
                f"{self.cached} cached, {self.written} written")


# --------------------------------------------------------------------------- parents
def parent_outputs(cache_dir: Path | str, source: str, schema_name: str) -> dict[str, dict[str, Any]]:
    """The parent's ok outputs per case (public read path), after checking its schema."""
    man = SourceCache(cache_dir, source).read_manifest()
    have = man.get("identity", {}).get("schema_name")
    if have != schema_name:
        raise DeriveError(f"source {source!r} holds {have} outputs; expected a {schema_name} source here")
    return read_outputs(cache_dir, source)


def content_sha(outputs: dict[str, dict[str, Any]]) -> str:
    """Content identity of a source's ok outputs: sha256 over (case id -> output), order-free."""
    return sha256_text(canonical_json(outputs))


def _module_sha(module: Any) -> str:
    return sha256_text(inspect.getsource(module))


def _identity(task: str, version: str, module: Any, schema: type[BaseModel], parents: dict[str, str]) -> dict[str, Any]:
    return {
        "task": task,
        "prompt_name": task,
        "prompt_version": version,
        "prompt_sha": _module_sha(module),
        "schema_name": schema.__name__,
        "schema_sha": schema_sha(schema),
        "backend": "derive",
        "model_id": "+".join(parents),
        "model_revision": sha256_text(canonical_json(parents)),
        "sampling": {},
    }


def _check_parents(cache: SourceCache, identity: dict[str, Any], parents: dict[str, dict[str, Any]]) -> None:
    """Refuse, with what changed, a derived source whose parents' content moved on since."""
    if not cache.exists():
        return
    man = cache.read_manifest()
    old = man.get("provenance", {}).get("parents", {})
    if man.get("identity", {}).get("model_revision") == identity["model_revision"]:
        return
    lines = []
    for name, outs in parents.items():
        before = old.get(name, {}).get("cases", {})
        now = {c: sha256_text(canonical_json(o)) for c, o in outs.items()}
        added = len(set(now) - set(before))
        removed = len(set(before) - set(now))
        changed = sum(1 for c in set(now) & set(before) if now[c] != before[c])
        lines.append(f"{name}: {added} case(s) added, {changed} changed, {removed} removed")
    if lines and any(not line.endswith("0 case(s) added, 0 changed, 0 removed") for line in lines):
        raise DeriveError(
            f"derived source {cache.source!r} was written from other contents of its parent source(s) "
            f"({'; '.join(lines)}). Derive into a new --source name to keep both, or delete {cache.dir} to re-derive."
        )


def _provenance(parents: dict[str, dict[str, Any]], version: str) -> dict[str, Any]:
    return {
        "derived_from": sorted(parents),
        "template_version": version,
        "parents": {
            name: {"content_sha": content_sha(outs), "n_ok": len(outs),
                   "cases": {c: sha256_text(canonical_json(o)) for c, o in outs.items()}}
            for name, outs in parents.items()
        },
    }


# --------------------------------------------------------------------------- writing
def _write(
    cache: SourceCache,
    identity: dict[str, Any],
    provenance: dict[str, Any],
    items: list[tuple[str, dict[str, Any], Callable[[], tuple[BaseModel | None, str | None]]]],
    meta: dict[str, Any],
) -> DeriveSummary:
    """Append one record per case not yet derived. ``items``: (case id, input, make) where
    ``make()`` returns (validated output, None) or (None, skip reason)."""
    cache.ensure_identity(identity, provenance)
    summary = DeriveSummary(source=cache.source, total=len(items))
    loaded = cache.load().records
    with cache.writer(identity) as w:
        for case_id, inp, make in items:
            text = canonical_json({"case_id": case_id, "input": inp})
            key = record_key(identity, text)
            rec = loaded.get(key)
            if rec is not None and rec.status in ("ok", "skipped"):
                summary.cached += 1
                _count(summary, rec.status, (rec.errors or [""])[0])
                continue
            out, reason = make()
            status = "ok" if out is not None else "skipped"
            w.append(CacheRecord(
                key=key, case_id=case_id, status=status, input_sha=sha256_text(text),
                rendered_prompt_sha=None, raw_output=None,
                output=out.model_dump(mode="json") if out is not None else None,
                errors=[reason] if reason else [], attempts=0, finish_reason=None,
                latency_s=0.0, input_meta=meta, created=now_iso(),
            ))
            summary.written += 1
            _count(summary, status, reason or "")
    cache.update_counts({"last_derive": {"at": now_iso(), **{k: v for k, v in summary.as_dict().items() if k != "skip_reasons"}}})
    return summary


def _count(summary: DeriveSummary, status: str, reason: str) -> None:
    setattr(summary, status, getattr(summary, status) + 1)
    if status == "skipped":
        summary.skip_reasons[reason] = summary.skip_reasons.get(reason, 0) + 1


# --------------------------------------------------------------------------- fields
NO_FIELD = "no field of the refined report is reported"


def derive_fields(cache_dir: Path | str, parent: str, source: str) -> DeriveSummary:
    """Write ``source``: one ``FieldStatements`` record per ok refined report of ``parent``."""
    if source == parent:
        raise DeriveError(f"the derived source needs a name other than its parent's ({parent!r})")
    outs = parent_outputs(cache_dir, parent, "RefinedReport")
    parents = {parent: outs}
    identity = _identity("derive_fields", FIELD_SENTENCES_VERSION, fs_mod, FieldStatements, {parent: content_sha(outs)})
    cache = SourceCache(cache_dir, source)
    _check_parents(cache, identity, parents)

    def make(out: dict[str, Any]) -> Callable[[], tuple[BaseModel | None, str | None]]:
        def run() -> tuple[BaseModel | None, str | None]:
            pairs = field_sentences(out)
            if not pairs:
                return None, NO_FIELD
            return FieldStatements.model_validate({"items": [{"kind": k, "text": t} for k, t in pairs]}), None
        return run

    items = [(cid, out, make(out)) for cid, out in sorted(outs.items())]
    return _write(cache, identity, _provenance(parents, FIELD_SENTENCES_VERSION), items, {"parent": parent})


# --------------------------------------------------------------------------- report sentences
NO_SENTENCE = "the report's diagnostic part holds no sentence"
NO_INPUT = "the report input was skipped (empty text or no TCGA barcode; `kemm-knowledge show` on the report source says why)"
REPORT_TEXTS = "report-texts"  # the parent's name in identity and provenance


def derive_report_sentences(cache_dir: Path | str, inputs: list[Any], source: str) -> DeriveSummary:
    """Write ``source``: one ``FieldStatements`` record (kind ``report``) per report input.

    ``inputs``: ``kemm.knowledge.report_inputs(files, ...)``; an input skipped there (empty
    report, no patient barcode) is skipped here (``NO_INPUT``: one reason for all of them, so the
    summary stays one line; the refine source's own record holds the row's reason). The parent content is the report
    texts: a report file whose text for a case changed is refused like a changed parent source.
    """
    texts = {i.case_id: {"text_sha": sha256_text(i.key_text or "")} for i in inputs}
    parents = {REPORT_TEXTS: texts}
    identity = _identity("derive_report_sentences", REPORT_SENTENCES_VERSION, rs_mod, FieldStatements,
                         {REPORT_TEXTS: content_sha(texts)})
    cache = SourceCache(cache_dir, source)
    _check_parents(cache, identity, parents)

    def make(inp: Any) -> Callable[[], tuple[BaseModel | None, str | None]]:
        def run() -> tuple[BaseModel | None, str | None]:
            if inp.skip_reason:
                return None, NO_INPUT
            sents = report_sentences(inp.key_text)
            if not sents:
                return None, NO_SENTENCE
            return FieldStatements.model_validate({"items": [{"kind": SENTENCE_KIND, "text": t} for t in sents]}), None
        return run

    items = [(i.case_id, texts[i.case_id], make(i)) for i in sorted(inputs, key=lambda x: x.case_id)]
    files = sorted({str((i.meta or {}).get("file", "")) for i in inputs} - {""})
    return _write(cache, identity, _provenance(parents, REPORT_SENTENCES_VERSION), items,
                  {"report_files": files, "sectioning": rs_mod.SENTENCES_SECTIONING})


# --------------------------------------------------------------------------- grounded PBK
NO_ACTIVE = "no PBK factor is active and no risk level is known for this report"
RISK_DIRECTION = {"low": "favourable", "intermediate": "context-dependent", "high": "unfavourable"}


def grounded_pbk(pbk: PrognosticKnowledge, report: dict[str, Any]) -> GroundedKnowledge | None:
    """The factors of ``pbk`` active for ``report`` (in PBK order) then the applicable risk statement."""
    items = [
        {"kind": f"pbk:{f.category}:{f.direction}", "text": f.statement, "direction": f.direction}
        for f, active in zip(pbk.prognostic_factors, ground_factors(pbk.prognostic_factors, report))
        if active is True
    ]
    level = risk_level(report)
    if level is not None:
        items.append({"kind": f"pbk:risk-{level}", "text": getattr(pbk.risk_levels, level),
                      "direction": RISK_DIRECTION[level]})
    if not items:
        return None
    return GroundedKnowledge.model_validate({"cancer_type": pbk.cancer_type, "items": items})


def _case_cancer_types(cache_dir: Path | str, reports: str, cases: list[str], override: str | None,
                       pbk_types: list[str]) -> dict[str, str | None]:
    """Cancer type per case: --cancer-type, else the report file's name, else the PBK's only type."""
    if override:
        return {c: override for c in cases}
    recs = SourceCache(cache_dir, reports).by_case()
    out: dict[str, str | None] = {}
    for c in cases:
        rec = recs.get(c)
        f = ((rec.input_meta if rec is not None else None) or {}).get("file")
        ct = cancer_type_for_file(Path(f)) if f else "UNKNOWN"
        out[c] = ct if ct != "UNKNOWN" else (pbk_types[0] if len(pbk_types) == 1 else None)
    return out


def derive_grounded_pbk(
    cache_dir: Path | str, reports: str, pbk: str, source: str, cancer_type: str | None = None
) -> DeriveSummary:
    """Write ``source``: per ok refined report of ``reports``, the ``pbk`` factors it activates."""
    if source in (reports, pbk):
        raise DeriveError(f"the derived source needs a name other than its parents' ({reports!r}, {pbk!r})")
    outs = parent_outputs(cache_dir, reports, "RefinedReport")
    pbk_outs = parent_outputs(cache_dir, pbk, "PrognosticKnowledge")
    if cancer_type and cancer_type not in pbk_outs:
        raise DeriveError(f"PBK source {pbk!r} has no entry for cancer type {cancer_type!r} (it has {sorted(pbk_outs)})")
    parents = {reports: outs, pbk: pbk_outs}
    identity = _identity("derive_grounded_pbk", GROUNDING_VERSION, gr_mod, GroundedKnowledge,
                         {reports: content_sha(outs), pbk: content_sha(pbk_outs)})
    cache = SourceCache(cache_dir, source)
    _check_parents(cache, identity, parents)
    types = _case_cancer_types(cache_dir, reports, sorted(outs), cancer_type, sorted(pbk_outs))
    knowledge = {ct: PrognosticKnowledge.model_validate(o) for ct, o in pbk_outs.items()}

    def make(case: str) -> Callable[[], tuple[BaseModel | None, str | None]]:
        def run() -> tuple[BaseModel | None, str | None]:
            ct = types[case]
            if ct is None:
                return None, "cancer type of the case unknown; pass --cancer-type"
            if ct not in knowledge:
                return None, f"PBK source {pbk!r} has no entry for cancer type {ct}"
            g = grounded_pbk(knowledge[ct], outs[case])
            return (g, None) if g is not None else (None, NO_ACTIVE)
        return run

    items = [(c, {"report": outs[c], "cancer_type": types[c]}, make(c)) for c in sorted(outs)]
    return _write(cache, identity, _provenance(parents, GROUNDING_VERSION), items, {"parents": [reports, pbk]})


# --------------------------------------------------------------------------- kinds
def read_statement_kinds(cache_dir: Path | str, source: str) -> dict[str, list[str]]:
    """Per case id (PBK: cancer type), the kind of each embedded statement, in embedding order.

    Derived sources: their recorded kinds (field names, ``pbk:<category>:<direction>``,
    ``pbk:risk-<level>``); refined-report sources: ``"statement"`` for every statement; PBK
    sources: ``"pbk"``. Rows follow ``kemm.knowledge.embed``: the last ok record per case,
    statements as ``statements()`` returns them, empty texts dropped.
    """
    cache = SourceCache(cache_dir, source)
    schema_name = cache.read_manifest().get("identity", {}).get("schema_name") or "RefinedReport"
    schema = get_schema(schema_name)
    default = "pbk" if schema_name == "PrognosticKnowledge" else "statement"
    out: dict[str, list[str]] = {}
    for case, rec in cache.by_case().items():
        if rec.status != "ok" or not isinstance(rec.output, dict):
            continue
        model = schema.model_validate(rec.output)
        texts = model.statements()
        kinds = model.kinds() if hasattr(model, "kinds") else [default] * len(texts)
        out[str(case)] = [k for k, t in zip(kinds, texts) if t]
    return out
