"""Encode statements once each, longest first: the fast path for ``embed_source``.

Refined-report statements repeat a lot across patients ("Margins negative.",
"No lymphovascular invasion."): the rules backend writes them from templates and LLMs
converge on the same phrasing. Encoding each distinct text once and scattering the rows
back gives the same matrix as encoding every occurrence (a sentence encoder is a function
of its text; padding inside a batch is masked out, so batch composition changes the rows
only at float rounding level, checked by ``tests/test_bench_equivalence.py``).

Sorting the distinct texts by length before cutting them into batches keeps each batch's
padding small; ``_encode_batched`` (one ``encode`` call per batch) otherwise pads every
batch to its longest member.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from kemm.knowledge.embed import Encoder, _encode_batched


def encode_unique(enc: Encoder, texts: list[str], batch_size: int, progress: Any, source: str) -> np.ndarray:
    """Drop-in for ``kemm.knowledge.embed._encode_batched``: ``texts`` [N] -> float32 ``[N, D]``.

    Each distinct text is encoded once (progress counts distinct texts), longest first.
    """
    if not texts:
        return np.zeros((0, enc.dim), dtype=np.float32)
    distinct = list(dict.fromkeys(texts))
    distinct.sort(key=len, reverse=True)  # stable: equal lengths keep first-seen order
    rows = _encode_batched(enc, distinct, batch_size, progress, source)
    row_of = {t: i for i, t in enumerate(distinct)}
    return rows[np.fromiter((row_of[t] for t in texts), dtype=np.int64, count=len(texts))]
