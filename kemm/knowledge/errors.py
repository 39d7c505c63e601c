"""The knowledge half's error root.

Every error the knowledge half raises for a user's input or a cache's state derives
from :class:`KnowledgeError`, so a caller on the other side of the seam (the model
half, the top-level CLI) catches one class and turns it into its own message.
"""

from __future__ import annotations


class KnowledgeError(ValueError):
    """Base of every knowledge-half error that a user can cause or fix."""


class EmbeddingError(KnowledgeError):
    """An embedding set is missing, torn, or does not match the encoder asked for."""
