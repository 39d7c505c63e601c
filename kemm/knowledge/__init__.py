"""Knowledge half of kemm: prompts, schemas, backends, cache, embeddings, audit.

This module is the half's public API: the names in ``__all__`` are what the model half,
the top-level CLI and users import (``from kemm.knowledge import read_embeddings``).
They are resolved lazily (PEP 562), so ``import kemm.knowledge`` is cheap and loads a
submodule only when one of its names is first used. The knowledge half never imports
``kemm.model``.

Rooms (each package's ``__init__`` says what it may import): ``generate`` (prompts,
schemas, backends, build, repair), ``store`` (cache, inputs, importers), ``rules``
(staging vocabulary, extractor, covariates, curated PBK), ``embed`` (encoder, embedding
store), ``review`` (claims, audit, diff), ``cli`` (``kemm-knowledge``); ``errors`` and
``records`` (typed records) are shared by all. This module imports only ``importlib``.
"""

from __future__ import annotations

from kemm._lazy import lazy_module


# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # errors
    "KnowledgeError": "kemm.knowledge.errors",
    "EmbeddingError": "kemm.knowledge.errors",
    "CacheError": "kemm.knowledge.store.cache",
    "InputError": "kemm.knowledge.store.inputs",
    "ImportFormatError": "kemm.knowledge.store.importers",
    # typed records
    "CacheRecord": "kemm.knowledge.records",
    # building and reading sources
    "build_reports": "kemm.knowledge.api",
    "build_pbk": "kemm.knowledge.api",
    "report_inputs": "kemm.knowledge.api",
    "merge_duplicate_cases": "kemm.knowledge.api",
    "read_outputs": "kemm.knowledge.api",
    "read_reports": "kemm.knowledge.store.inputs",
    "SourceCache": "kemm.knowledge.store.cache",
    "import_file": "kemm.knowledge.store.importers",
    "extract_report": "kemm.knowledge.rules.extract",
    # embeddings
    "read_embeddings": "kemm.knowledge.embed.store",
    "KnowledgeEmbeddings": "kemm.knowledge.embed.store",
    "source_identity": "kemm.knowledge.embed.store",
    "embed_source": "kemm.knowledge.embed.embed",
    "record_statements": "kemm.knowledge.embed.embed",
    "encode_unique": "kemm.knowledge.embed.embed",
    "encode_batched": "kemm.knowledge.embed.embed",
    "load_encoder": "kemm.knowledge.embed.encoder",
    # numeric covariates of refined reports
    "REPORT_COVARIATES": "kemm.knowledge.rules.covariates",
    "encode_report": "kemm.knowledge.rules.covariates",
    "report_covariates": "kemm.knowledge.rules.covariates",
    # derived sources: field sentences and PBK grounded in the patient
    "FIELD_KINDS": "kemm.knowledge.rules.field_sentences",
    "FIELD_SENTENCES_VERSION": "kemm.knowledge.rules.field_sentences",
    "field_sentences": "kemm.knowledge.rules.field_sentences",
    "kind_field": "kemm.knowledge.rules.field_sentences",
    "ground_factors": "kemm.knowledge.rules.grounding",
    "derive_fields": "kemm.knowledge.generate.derive",
    "derive_grounded_pbk": "kemm.knowledge.generate.derive",
    "derive_report_sentences": "kemm.knowledge.generate.derive",
    "read_statement_kinds": "kemm.knowledge.generate.derive",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_module("kemm.knowledge", _EXPORTS, globals())
