"""Errors of the model half: one root, one class per kind of user mistake.

Every message names the file, case, column or key that is wrong and the expected
form; the CLI prints it as one line and exits 2.  Errors of the knowledge half
(``kemm.knowledge.KnowledgeError``) are turned into :class:`DataError` where the
model reads knowledge (``data/knowledge.py``, ``data/clinical.py``).

Imports: the standard library only.
"""
from __future__ import annotations


class ModelError(Exception):
    """Root of every error the model half raises on purpose."""


class ConfigError(ModelError, ValueError):
    """An experiment config that cannot be used (file, key, expected form)."""


class DataError(ModelError, ValueError):
    """Input data that cannot be used; the message names the file, case, column and expected form."""


class RunError(ModelError, RuntimeError):
    """A run directory that cannot be used as asked (another experiment, other settings, old format)."""
