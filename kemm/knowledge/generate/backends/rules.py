"""The ``rules`` backend: deterministic, LLM-free, the offline default and an ablation baseline.

- ``RefinedReport``: ``kemm.knowledge.rules.extract.extract_report`` on the
  request's ``report_text``.
- ``PrognosticKnowledge``: the curated entry for the request's ``cancer_type``
  from ``kemm/knowledge/rules/pbk_curated.yaml``.

It reads ``request.inputs`` and ignores the rendered messages (and any repair
feedback): the same input always gives the same output.  The model revision is
the sha256 of the extractor source and the curated table, so editing either
changes every cache key.
"""
from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel

from kemm.knowledge.generate.backends.base import BackendError, GenerationRequest, GenerationResult, register
from kemm.knowledge.generate.schemas import PrognosticKnowledge, RefinedReport
from kemm.knowledge.rules.extract import EXTRACTOR_FILES, extract_report

MODEL_ID = "kemm-rules"
PBK_FILE = "pbk_curated.yaml"


def _rules_bytes(name: str) -> bytes:
    """A file shipped inside ``kemm.knowledge.rules`` (works from a wheel as well as a checkout)."""
    return resources.files("kemm.knowledge.rules").joinpath(name).read_bytes()


@lru_cache(maxsize=1)
def model_revision() -> str:
    """sha256 over the extractor's source files (``EXTRACTOR_FILES``) and the curated PBK table."""
    h = hashlib.sha256()
    for name in EXTRACTOR_FILES:
        h.update(_rules_bytes(name))
        h.update(b"\0")
    h.update(_rules_bytes(PBK_FILE))
    return h.hexdigest()


@lru_cache(maxsize=1)
def _pbk_file() -> dict[str, Any]:
    raw = yaml.safe_load(_rules_bytes(PBK_FILE).decode("utf-8"))
    if not isinstance(raw, dict):
        raise BackendError(f"kemm/knowledge/rules/{PBK_FILE}: expected a mapping of cancer type -> entry")
    return raw


@lru_cache(maxsize=1)
def load_pbk_table() -> dict[str, dict[str, Any]]:
    """The curated table as ``{cancer_type: entry}``, aliases (``GBM`` -> ``GBMLGG``) included.

    Each factor of the file carries ``refs`` (keys of ``_references``, its literature); the
    entries returned here leave them out, so each validates as PrognosticKnowledge.
    """
    raw = _pbk_file()
    table = {str(k).upper(): _without_refs(v) for k, v in raw.items() if not str(k).startswith("_")}
    for alias, target in (raw.get("_aliases") or {}).items():
        table[str(alias).upper()] = table[str(target).upper()]
    return table


def pbk_references(cancer_type: str) -> dict[str, list[str]]:
    """``{factor name: [full citation, ...]}`` of a curated type (aliases resolved)."""
    raw = _pbk_file()
    ct = str(cancer_type).upper()
    ct = str((raw.get("_aliases") or {}).get(ct, ct))
    refs = raw.get("_references") or {}
    return {f["name"]: [refs[r] for r in f.get("refs", [])] for f in raw[ct]["prognostic_factors"]}


def _without_refs(entry: dict[str, Any]) -> dict[str, Any]:
    factors = [{k: v for k, v in f.items() if k != "refs"} for f in entry.get("prognostic_factors", [])]
    return {**entry, "prognostic_factors": factors}


def pbk_cancer_types() -> list[str]:
    return sorted(load_pbk_table())


def pbk_raw(cancer_type: str) -> dict[str, Any]:
    """The curated entry as a plain dict (what the backend emits; the repair loop validates it).
    KeyError naming the known types when absent."""
    ct = (cancer_type or "").strip().upper()
    table = load_pbk_table()
    if ct not in table:
        raise KeyError(
            f"no curated prognostic knowledge for cancer type {cancer_type!r}; "
            f"known types: {', '.join(sorted(table))} (add an entry to kemm/knowledge/rules/{PBK_FILE} "
            "or use an LLM backend)"
        )
    return {"cancer_type": ct, **table[ct]}


class RulesBackend:
    name = "rules"

    def generate(
        self,
        requests: list[GenerationRequest],
        schema: type[BaseModel],
        sampling: dict[str, Any],
    ) -> list[GenerationResult]:
        return [self._one(r, schema) for r in requests]

    def _one(self, request: GenerationRequest, schema: type[BaseModel]) -> GenerationResult:
        t0 = time.perf_counter()
        try:
            if schema is RefinedReport:
                text = request.inputs.get("report_text")
                if not isinstance(text, str):
                    raise ValueError(
                        "rules backend: request.inputs has no 'report_text' string "
                        f"(case {request.inputs.get('case_id')!r}); the refine_report task must pass it"
                    )
                out = extract_report(text).model_dump_json()
            elif schema is PrognosticKnowledge:
                out = json.dumps(pbk_raw(str(request.inputs.get("cancer_type", ""))), ensure_ascii=False)
            else:
                raise ValueError(
                    f"rules backend: no rules for schema {schema.__name__}; "
                    "supported: RefinedReport, PrognosticKnowledge"
                )
        except (KeyError, ValueError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            return GenerationResult(
                text="", finish_reason="error", latency_s=time.perf_counter() - t0, error=str(msg)
            )
        return GenerationResult(text=out, finish_reason="stop", latency_s=time.perf_counter() - t0)

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": MODEL_ID,
            "model_revision": model_revision(),
            "backend": self.name,
            "device": "cpu",
            "deterministic": True,
            "pbk_cancer_types": pbk_cancer_types(),
        }

    def close(self) -> None:
        pass


@register("rules")
def create_rules_backend(**options: Any) -> RulesBackend:
    """Factory: the rules backend takes no options; None-valued ones (CLI defaults) are ignored."""
    unknown = {k: v for k, v in options.items() if v is not None}
    if unknown:
        raise BackendError(
            f"the rules backend takes no options; got {', '.join(sorted(unknown))}. "
            "Drop them, or pick an LLM backend (--backend transformers|vllm|openai)."
        )
    return RulesBackend()
