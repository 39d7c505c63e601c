"""Backends: one protocol (``base``), a registry by name (``registry``), and the built-ins
(``rules``, ``transformers``, ``vllm``, ``openai``; shared helpers in ``options``).

May import: ``kemm.knowledge.errors``, ``generate.schemas``, ``generate.catalog`` (packaged
models), ``generate.batching`` (token-budget batches), ``rules`` (the rules backend runs the
extractor), and heavy optional libraries lazily inside a backend's constructor.
Not the cache, the embeddings or the review room. This ``__init__`` imports nothing, so a
submodule can be loaded on its own.
"""
