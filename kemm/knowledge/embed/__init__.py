"""Embeddings: sentence encoders (``encoder``), the per-(source, encoder) embedding store
and its reader (``store``), and incremental embedding of a source (``embed``).

May import: ``kemm._io``, ``kemm.knowledge.errors``, ``kemm.knowledge.records``,
``store.cache`` and ``generate.schemas``; sentence_transformers lazily. Never ``review``,
``cli`` or ``kemm.model``. This ``__init__`` imports nothing.
"""
