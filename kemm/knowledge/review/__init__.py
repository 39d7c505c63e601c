"""Review: checkable claims (``claims``), the audit of a source (``audit``) and its HTML page
(``audit_html``), claims copied from the prompt (``prompt_copies``), and field-by-field
agreement of two sources (``diff``).

May import: ``kemm._io``, ``kemm.knowledge.errors``, ``kemm.knowledge.records``, ``store``,
``generate.schemas``, ``generate.prompts`` (a prompt's example values) and ``rules.staging``.
Never ``generate.build``, ``embed``, ``cli`` or ``kemm.model``. This ``__init__`` imports nothing.
"""
