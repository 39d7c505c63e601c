"""Generation: versioned prompts, output schemas, backends, the validate-and-repair loop,
and ``build`` (inputs -> cached records).

May import: ``kemm.knowledge.errors``, ``kemm.knowledge.records``, ``store`` (the cache it
writes, the inputs it reads) and ``rules`` (the rules backend). Never ``embed``, ``review``,
``cli`` or ``kemm.model``. This ``__init__`` imports nothing.
"""
