"""Knowledge as the model sees it: statement-embedding tables keyed by case or cancer type.

The model reads knowledge only through the knowledge half's public reader
(``kemm.knowledge.read_embeddings``); tests and the synthetic pipeline may also
hand in tables built in memory.  A case without an entry has no report tokens
(masked), never a zero vector posing as text.  This is one of the two seams with
the knowledge half (the other is ``clinical.py``): any ``KnowledgeError`` becomes
a :class:`DataError` here.

Imports: numpy, ``kemm.knowledge`` (public API only), ``kemm.model.errors``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import kemm.knowledge as knowledge
from kemm.model.errors import DataError


@dataclass
class TextTable:
    """Statement embeddings per key: case id (reports) or TCGA study code (PBK)."""

    source: str
    encoder_id: str
    dim: int
    by_key: dict[str, np.ndarray]  # key -> float32 [S, D], S >= 1
    statements: dict[str, list[str]] = field(default_factory=dict)

    def get(self, key: str | None) -> np.ndarray | None:
        if key is None:
            return None
        x = self.by_key.get(key)
        return x if x is not None and len(x) else None


def as_table(obj: Any, name: str = "knowledge") -> TextTable:
    """A ``TextTable`` from a ``KnowledgeEmbeddings`` (or anything with ``by_case`` and ``dim``)."""
    if isinstance(obj, TextTable):
        return obj
    by = getattr(obj, "by_case", None)
    if by is None:
        raise TypeError(f"{name}: expected KnowledgeEmbeddings-like object with .by_case, got {type(obj).__name__}")
    dim = int(getattr(obj, "dim"))
    src = str(getattr(obj, "source", name))
    out: dict[str, np.ndarray] = {}
    for k, v in by.items():
        a = np.asarray(v, dtype=np.float32)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2 or a.shape[1] != dim:
            raise DataError(f"knowledge source {src!r}: key {k!r} has embeddings of shape {a.shape}, expected [S, {dim}]")
        out[str(k)] = a
    return TextTable(src, str(getattr(obj, "encoder_id", "")), dim, out, dict(getattr(obj, "statements", {}) or {}))


def load_table(cache_dir: Path | str, source: str, encoder: str | None = None) -> TextTable:
    """Read a source's embeddings from the knowledge cache (``kemm-knowledge embed`` writes them)."""
    try:
        emb = knowledge.read_embeddings(cache_dir, source, encoder_id=encoder)
    except knowledge.KnowledgeError as e:
        raise DataError(str(e)) from None  # the message already names the source and the cache
    return as_table(emb, source)


def check_same_encoder(report: TextTable | None, pbk: TextTable | None) -> int | None:
    """Report and PBK tokens share one projection, so they need the same encoder (dimension)."""
    if report is not None and pbk is not None:
        if report.dim != pbk.dim or (report.encoder_id and pbk.encoder_id and report.encoder_id != pbk.encoder_id):
            raise DataError(
                f"knowledge sources {report.source!r} (encoder {report.encoder_id!r}, dim {report.dim}) and "
                f"{pbk.source!r} (encoder {pbk.encoder_id!r}, dim {pbk.dim}) use different encoders; "
                "embed both with the same knowledge.encoder"
            )
    t = report or pbk
    return t.dim if t is not None else None
