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
    # key -> S kind names ("statement", "pbk", a field name such as "pT", "pbk:stage:unfavourable", ...);
    # a key without kinds has kind ``default_kind`` for every row.
    kinds: dict[str, list[str]] = field(default_factory=dict)
    default_kind: str = "statement"

    def get(self, key: str | None) -> np.ndarray | None:
        if key is None:
            return None
        x = self.by_key.get(key)
        return x if x is not None and len(x) else None

    def kinds_of(self, key: str) -> list[str]:
        """The kind of each of ``key``'s S rows."""
        k = self.kinds.get(key)
        n = len(self.by_key[key])
        if k is None or len(k) != n:
            return [self.default_kind] * n
        return list(k)

    def all_kinds(self) -> set[str]:
        out = {self.default_kind}
        for v in self.kinds.values():
            out.update(v)
        return out


def merge_tables(tables: list[TextTable]) -> TextTable | None:
    """Concatenate several sources' rows per key (same encoder), in the order given."""
    if not tables:
        return None
    if len(tables) == 1:
        return tables[0]
    first = tables[0]
    for t in tables[1:]:
        if t.dim != first.dim or (t.encoder_id and first.encoder_id and t.encoder_id != first.encoder_id):
            raise DataError(
                f"knowledge sources {first.source!r} (encoder {first.encoder_id!r}, dim {first.dim}) and {t.source!r} "
                f"(encoder {t.encoder_id!r}, dim {t.dim}) use different encoders; embed both with one encoder"
            )
    by_key: dict[str, list[np.ndarray]] = {}
    kinds: dict[str, list[str]] = {}
    statements: dict[str, list[str]] = {}
    for t in tables:
        for key, x in t.by_key.items():
            if not len(x):
                continue
            by_key.setdefault(key, []).append(x)
            kinds.setdefault(key, []).extend(t.kinds_of(key))
            statements.setdefault(key, []).extend(t.statements.get(key, [""] * len(x)))
    return TextTable(
        "+".join(t.source for t in tables),
        first.encoder_id,
        first.dim,
        {k: np.concatenate(v, axis=0) for k, v in by_key.items()},
        statements,
        kinds,
        first.default_kind,
    )


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


def load_table(
    cache_dir: Path | str, source: str, encoder: str | None = None, default_kind: str = "statement",
    kind_values: bool = True,
) -> TextTable:
    """Read a source's embeddings and statement kinds from the knowledge cache (``kemm-knowledge embed``).

    ``kind_values=False`` folds field kinds to their field (``pT:3`` -> ``pT``; ``kemm.knowledge.kind_field``).
    """
    try:
        table = as_table(knowledge.read_embeddings(cache_dir, source, encoder_id=encoder), source)
        kinds = knowledge.read_statement_kinds(cache_dir, source)
    except knowledge.KnowledgeError as e:
        raise DataError(str(e)) from None
    table.default_kind = default_kind
    # Ordinary sources say "statement" (reports) for every row; PBK rows keep the PBK default.
    table.kinds = {k: v for k, v in kinds.items() if any(x not in ("statement", "pbk") for x in v)}
    if not kind_values:
        table.kinds = {k: [knowledge.kind_field(x) for x in v] for k, v in table.kinds.items()}
    return table


def load_tables(
    cache_dir: Path | str, sources: list[str], encoder: str | None = None, default_kind: str = "statement",
    kind_values: bool = True,
) -> TextTable | None:
    """Several sources concatenated per key (None when ``sources`` is empty)."""
    return merge_tables([load_table(cache_dir, s, encoder, default_kind, kind_values) for s in sources])


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
