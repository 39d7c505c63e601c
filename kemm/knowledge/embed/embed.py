"""Embed a knowledge source: every statement of every ok record, incrementally.

A record whose key (content address of everything that shaped its output) and
statements are unchanged reuses its stored rows; only new or changed records are
encoded, each distinct text once. The files are written by :mod:`kemm.knowledge.embed.store`.

Imports: ``kemm.knowledge.errors``, ``records``, ``store.cache``, ``generate.schemas`` and
the sibling ``encoder`` and ``store`` modules; rich for the progress bar.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors import SafetensorError, safe_open

from kemm import __version__
from kemm.knowledge.embed.encoder import Encoder, load_encoder
from kemm.knowledge.embed.store import TENSOR_NAME, identity_mismatch, load_stored, set_paths, write_set
from kemm.knowledge.errors import EmbeddingError
from kemm.knowledge.generate.schemas import get_schema
from kemm.knowledge.records import CacheRecord
from kemm.knowledge.store.cache import SourceCache, now_iso, records_generation

log = logging.getLogger(__name__)


@dataclass
class EmbedSummary:
    n_records: int
    n_statements: int
    n_encoded: int
    n_reused: int
    elapsed_s: float
    encoder_id: str
    path: Path
    n_skipped_records: int = 0  # failed / skipped records: nothing to embed
    n_unique_encoded: int = 0  # distinct texts actually sent to the encoder


def record_statements(rec: CacheRecord, schema_name: str) -> list[str]:
    """The statements of a record's output (validated as ``schema_name``); [] without output."""
    if not isinstance(rec.output, dict):
        return []
    model = get_schema(schema_name).model_validate(rec.output)
    return [s for s in model.statements() if s]


def embed_source(
    cache_dir: Path | str,
    source: str,
    encoder: Encoder | None = None,
    batch_size: int = 64,
    progress: bool | Callable[[int, int], None] = True,
    rebuild: bool = False,
) -> EmbedSummary:
    """Encode every statement of every ok record of ``source`` (incrementally).

    Args:
        encoder: anything with ``encoder_id``, ``dim``, ``identity()`` and
            ``encode(texts, batch_size) -> [N, D]``; default: all-MiniLM-L6-v2.
        progress: True for a rich progress bar on stderr, False for none, or a
            callable ``(done, total)`` called after each batch.
        rebuild: re-encode everything, also when the stored set came from an
            encoder with other weights (otherwise refused).
    """
    t0 = time.perf_counter()
    sc = SourceCache(cache_dir, source)
    man = sc.read_manifest()
    schema_name = man.get("identity", {}).get("schema_name") or "RefinedReport"
    enc = encoder if encoder is not None else load_encoder()
    ident = dict(enc.identity())
    ident.setdefault("encoder_id", enc.encoder_id)
    ident.setdefault("dim", enc.dim)
    edir = sc.dir / "embeddings"
    data_p, index_p, man_p = set_paths(edir, enc.encoder_id)
    loaded = sc.load()
    n_skipped = sum(1 for rec in loaded.records.values() if rec.status != "ok")
    served = _last_ok(loaded.records.values())
    per_case = _current_statements(served, schema_name, source)
    stored = None if rebuild else _stored_or_none(edir, enc.encoder_id, source)
    stored_rows = _reusable_rows(stored, per_case, ident, data_p, man_p)

    todo = [(cid, key, sts) for cid, (key, sts) in per_case.items() if key not in stored_rows]
    texts = [s for _, _, sts in todo for s in sts]
    new_rows = encode_unique(enc, texts, batch_size, progress, source)
    pos = 0
    for _, key, sts in todo:
        stored_rows[key] = new_rows[pos : pos + len(sts)]
        pos += len(sts)
    matrix, entries = _assemble(per_case, stored_rows, enc.dim)
    n_reused = sum(len(sts) for key, sts in per_case.values()) - len(texts)
    created = stored[0].get("created") if stored is not None else now_iso()
    write_set(edir, enc.encoder_id, matrix, entries, {
        "source": source,
        "encoder_id": enc.encoder_id,
        "encoder": ident,
        "schema_name": schema_name,
        "records_generation": records_generation(served),  # the reader refuses a set whose source moved on
        "n_records": len(entries),
        "n_statements": int(matrix.shape[0]),
        "dim": int(enc.dim),
        "dtype": "float32",
        "files": {"data": data_p.name, "index": index_p.name},
        "created": created,
        "updated": now_iso(),
        "last_embed": {"encoded": len(texts), "reused": n_reused, "at": now_iso()},
        "kemm_version": __version__,
    })
    return EmbedSummary(
        n_records=len(entries),
        n_statements=int(matrix.shape[0]),
        n_encoded=len(texts),
        n_reused=n_reused,
        elapsed_s=time.perf_counter() - t0,
        encoder_id=enc.encoder_id,
        path=data_p,
        n_skipped_records=n_skipped,
        n_unique_encoded=len(set(texts)),
    )


def _last_ok(records: Iterable[CacheRecord]) -> dict[str, CacheRecord]:
    """The last-written record per case id, where ok (as ``SourceCache.ok_by_case``).

    So the model's report tokens and ``read_outputs()`` agree.
    """
    last: dict[str, CacheRecord] = {}
    for rec in records:  # in order of each key's last line
        last[str(rec.case_id)] = rec
    return {cid: rec for cid, rec in last.items() if rec.status == "ok"}


def _current_statements(served: dict[str, CacheRecord], schema_name: str,
                        source: str) -> dict[str, tuple[str, list[str]]]:
    """Per case id (sorted): (record key, statements) of each served record."""
    per_case: dict[str, tuple[str, list[str]]] = {}
    for cid in sorted(served):
        rec = served[cid]
        try:
            sts = record_statements(rec, schema_name)
        except ValidationError as e:  # a record that no longer validates is an audit finding, not a crash
            raise EmbeddingError(f"source {source!r}, case {rec.case_id!r}: output does not validate as {schema_name}: {e}") from None
        per_case[cid] = (rec.key, sts)
    return per_case


def _stored_or_none(edir: Path, encoder_id: str, source: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The stored set, or None (everything re-encoded, with a warning) when it is damaged: an
    interrupted embed, a truncated or corrupt data file. ``embed`` repairs what ``read`` refuses."""
    try:
        stored = load_stored(edir, encoder_id)
        if stored is not None:
            with safe_open(str(set_paths(edir, encoder_id)[0]), framework="numpy") as f:
                f.get_slice(TENSOR_NAME).get_shape()
        return stored
    except (EmbeddingError, OSError, ValueError, SafetensorError) as e:
        log.warning("embeddings of %s for %s are damaged (%s); re-encoding every statement", source, encoder_id, e)
        return None


def _reusable_rows(stored: tuple[dict[str, Any], dict[str, Any]] | None, per_case: dict[str, tuple[str, list[str]]],
                   ident: dict[str, Any], data_p: Path, man_p: Path) -> dict[str, np.ndarray]:
    """Rows [S, D] per record key of the stored set whose key and statements are unchanged."""
    rows: dict[str, np.ndarray] = {}
    if stored is None:
        return rows
    smani, sindex = stored
    diffs = identity_mismatch(smani.get("encoder", {}), ident)
    if diffs:
        raise EmbeddingError(
            f"stored embeddings {man_p} were made by a different encoder than the one loaded "
            f"({'; '.join(diffs)}); rerun with --rebuild to re-encode everything"
        )
    wanted = {key: sts for key, sts in per_case.values()}
    reuse = [e for e in sindex.get("records", []) if wanted.get(e["key"]) == e["statements"]]
    if reuse:
        with safe_open(str(data_p), framework="numpy") as f:
            sl = f.get_slice(TENSOR_NAME)
            for e in reuse:
                rows[e["key"]] = np.asarray(sl[e["start"] : e["stop"]], dtype=np.float32)
    return rows


def _assemble(per_case: dict[str, tuple[str, list[str]]], rows: dict[str, np.ndarray],
              dim: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The matrix [N, D] and its index entries, in case-id order."""
    blocks, entries, start = [], [], 0
    for cid in sorted(per_case):
        key, sts = per_case[cid]
        blocks.append(rows[key])
        entries.append({"key": key, "case_id": cid, "start": start, "stop": start + len(sts), "statements": sts})
        start += len(sts)
    matrix = np.concatenate(blocks, axis=0) if blocks else np.zeros((0, dim), dtype=np.float32)
    return matrix, entries


def encode_unique(enc: Encoder, texts: list[str], batch_size: int, progress: Any, source: str) -> np.ndarray:
    """``texts`` [N] -> float32 ``[N, D]``, encoding each distinct text once.

    Boilerplate statements ("Behavior: malignant.", "Margins negative.") repeat across
    records; they are encoded once, sorted by length so each batch pads little, and the
    rows scattered back (same rows as encoding every occurrence, up to float rounding:
    tests/model/data/test_bench_equivalence.py). Progress counts distinct texts.
    """
    if not texts:
        return np.zeros((0, enc.dim), dtype=np.float32)
    unique = sorted(dict.fromkeys(texts), key=len)
    rows = encode_batched(enc, unique, batch_size, progress, source)
    if rows.shape != (len(unique), enc.dim):
        raise EmbeddingError(f"encoder {enc.encoder_id} returned shape {rows.shape}, expected ({len(unique)}, {enc.dim})")
    row_of = {t: i for i, t in enumerate(unique)}
    return rows[np.fromiter((row_of[t] for t in texts), dtype=np.int64, count=len(texts))]


def encode_batched(enc: Encoder, texts: list[str], batch_size: int, progress: Any, source: str) -> np.ndarray:
    """``texts`` [N] -> float32 ``[N, D]`` in batches of ``batch_size``, reporting progress per batch."""
    if not texts:
        return np.zeros((0, enc.dim), dtype=np.float32)
    chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    out: list[np.ndarray] = []
    if progress is True:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True)) as prog:
            tid = prog.add_task(f"embed {source} ({enc.encoder_id})", total=len(texts))
            for ch in chunks:
                out.append(enc.encode(ch, batch_size=batch_size))
                prog.advance(tid, len(ch))
    else:
        done = 0
        for ch in chunks:
            out.append(enc.encode(ch, batch_size=batch_size))
            done += len(ch)
            if callable(progress):
                progress(done, len(texts))
    return np.concatenate(out, axis=0).astype(np.float32, copy=False)

