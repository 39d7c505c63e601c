"""Knowledge half of kemm: prompts, schemas, backends, cache, embeddings, audit.

This module is the half's public API: the names in ``__all__`` are what the model half,
the top-level CLI and users import (``from kemm.knowledge import read_embeddings``).
They are resolved lazily (PEP 562), so ``import kemm.knowledge`` is cheap and loads a
submodule only when one of its names is first used. The knowledge half never imports
``kemm.model``.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "KnowledgeError": "kemm.knowledge.errors",
    "CacheError": "kemm.knowledge.cache",
    "EmbeddingError": "kemm.knowledge.embed",
    "read_outputs": "kemm.knowledge.api",
    "build_reports": "kemm.knowledge.api",
    "build_pbk": "kemm.knowledge.api",
    "report_inputs": "kemm.knowledge.api",
    "read_embeddings": "kemm.knowledge.embed",
    "embed_source": "kemm.knowledge.embed",
    "load_encoder": "kemm.knowledge.embed",
    "import_file": "kemm.knowledge.importers",
    "REPORT_COVARIATES": "kemm.knowledge.covariates",
    "encode_report": "kemm.knowledge.covariates",
    "report_covariates": "kemm.knowledge.covariates",
    "FIELD_KINDS": "kemm.knowledge.rules.field_sentences",
    "FIELD_SENTENCES_VERSION": "kemm.knowledge.rules.field_sentences",
    "field_sentences": "kemm.knowledge.rules.field_sentences",
    "ground_factors": "kemm.knowledge.rules.grounding",
    "derive_fields": "kemm.knowledge.generate.derive",
    "derive_grounded_pbk": "kemm.knowledge.generate.derive",
    "read_statement_kinds": "kemm.knowledge.generate.derive",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kemm.knowledge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
