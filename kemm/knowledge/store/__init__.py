"""Storage: the content-addressed knowledge cache (``cache``), report inputs (``inputs``)
and importers of outputs other LLMs produced (``importers``).

May import: ``kemm._io``, ``kemm.knowledge.errors``, ``kemm.knowledge.records``,
``generate.schemas`` (what an import validates against) and ``rules.staging`` (the one
TNM/grade vocabulary). Never ``generate.build``, ``embed``, ``review``, ``cli`` or
``kemm.model``. This ``__init__`` imports nothing.
"""
