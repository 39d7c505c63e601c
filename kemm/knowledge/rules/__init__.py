"""Rules: the clinical vocabulary (``staging``: roman numerals, grades, TNM patterns, field
lists - its one home), the deterministic report extractor (``extract`` and its parts),
numeric covariates of refined reports (``covariates``) and the curated PBK table
(``pbk_curated.yaml``).

May import: ``kemm.knowledge.errors``, ``generate.schemas`` and, for ``covariates`` only,
``kemm.knowledge.api`` (to read outputs). Never ``kemm.model``. This ``__init__`` imports
nothing.
"""
