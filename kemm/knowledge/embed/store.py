"""The embedding store: per (source, encoder), three files written atomically.

Layout, per (source, encoder)::

    <cache_dir>/<source>/embeddings/<encoder-id>.safetensors      one float32 tensor "embeddings" [N, D]
    <cache_dir>/<source>/embeddings/<encoder-id>.index.json       per record: key, case id, rows [start, stop), statements
    <cache_dir>/<source>/embeddings/<encoder-id>.manifest.json    encoder identity (name, dim, weights sha256,
                                                                  package version, normalize), counts, timestamps

The manifest records the ``records_generation`` of the source it encodes; :func:`read_embeddings`
refuses a set whose source has changed since (a rebuild without ``embed``).

Data first, index second, manifest last; all three carry the same random ``generation``
id, so a reader notices a set torn by an interrupted ``embed`` and asks for a rerun
instead of serving rows that belong to other statements. The model half reads through
:func:`read_embeddings` and never imports an encoder.

Imports: ``kemm._io``, ``kemm.knowledge.errors``, ``store.cache``; safetensors.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from kemm._io import atomic_write_text, atomic_write_with
from kemm.knowledge.embed.encoder import DEFAULT_ENCODER_ID
from kemm.knowledge.errors import EmbeddingError
from kemm.knowledge.store.cache import CacheError, SourceCache, canonical_json, records_generation

TENSOR_NAME = "embeddings"


@dataclass
class KnowledgeEmbeddings:
    """Statement embeddings of one source, per case id.

    Attributes:
        by_case: float32 ``[S_i, D]`` per case id (PBK sources: key = cancer type code).
        statements: the ``S_i`` texts per case id, row-aligned with ``by_case``.
    """

    source: str
    encoder_id: str
    dim: int
    by_case: dict[str, np.ndarray]
    statements: dict[str, list[str]]
    keys: dict[str, str] = field(default_factory=dict)  # case id -> record key
    identity: dict[str, Any] = field(default_factory=dict)  # the embedding manifest's encoder identity


def embeddings_dir(cache_dir: Path | str, source: str) -> Path:
    return SourceCache(cache_dir, source).dir / "embeddings"


def set_paths(edir: Path, encoder_id: str) -> tuple[Path, Path, Path]:
    return (
        edir / f"{encoder_id}.safetensors",
        edir / f"{encoder_id}.index.json",
        edir / f"{encoder_id}.manifest.json",
    )


def available_encoders(cache_dir: Path | str, source: str) -> list[str]:
    edir = embeddings_dir(cache_dir, source)
    if not edir.is_dir():
        return []
    return sorted(p.name[: -len(".manifest.json")] for p in edir.glob("*.manifest.json"))


def save_tensor(path: Path, arr: np.ndarray, metadata: dict[str, str]) -> None:
    """Write ``arr`` [N, D] as the float32 tensor ``embeddings`` of a safetensors file, atomically."""
    data = np.ascontiguousarray(arr, dtype=np.float32)
    atomic_write_with(path, lambda tmp: save_file({TENSOR_NAME: data}, str(tmp), metadata=metadata))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EmbeddingError(f"{path}: missing; rerun `kemm-knowledge embed {path.parent.parent.name}`") from None
    except json.JSONDecodeError as e:
        raise EmbeddingError(f"{path}: not valid JSON ({e}); rerun `kemm-knowledge embed {path.parent.parent.name}`") from None


def load_stored(edir: Path, encoder_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(manifest, index) of an existing consistent set, or None when there is none."""
    data_p, index_p, man_p = set_paths(edir, encoder_id)
    if not man_p.is_file():
        return None
    man = _read_json(man_p)
    index = _read_json(index_p)
    if not data_p.is_file():
        raise EmbeddingError(f"{data_p}: missing while {man_p.name} exists; rerun `kemm-knowledge embed {edir.parent.name}` "
                             "(it re-encodes a damaged set)")
    gens = {man.get("generation"), index.get("generation"), _tensor_metadata(data_p).get("generation")}
    if len(gens) != 1:
        raise EmbeddingError(
            f"embedding set {edir / encoder_id}.* is inconsistent (an embed was interrupted between files); "
            f"rerun `kemm-knowledge embed {edir.parent.name}` (it re-encodes a damaged set)"
        )
    return man, index


def _tensor_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="numpy") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise EmbeddingError(f"{path}: not a readable safetensors file ({e}); it is truncated or corrupt: "
                             f"rerun `kemm-knowledge embed SOURCE` (it re-encodes a damaged set)") from None


def identity_mismatch(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Differences that make stored rows incomparable with the current encoder's."""
    out = []
    for k in ("dim", "weights_sha256", "normalize"):
        if stored.get(k) != current.get(k):
            out.append(f"{k}: stored {stored.get(k)!r}, encoder has {current.get(k)!r}")
    return out


def resolve_encoder_id(cache_dir: Path | str, source: str, encoder_id: str | None) -> str:
    have = available_encoders(cache_dir, source)
    sc = SourceCache(cache_dir, source)
    if not sc.exists():
        raise CacheError(f"no knowledge source {source!r} in {cache_dir}; `kemm-knowledge ls` lists the sources")
    if encoder_id is None:
        if len(have) == 1:
            return have[0]
        if DEFAULT_ENCODER_ID in have:
            return DEFAULT_ENCODER_ID
        if not have:
            raise EmbeddingError(f"source {source!r} has no embeddings yet; run `kemm-knowledge embed {source}`")
        raise EmbeddingError(f"source {source!r} has several embedding sets ({', '.join(have)}); name one with encoder_id")
    if encoder_id not in have:
        listing = ", ".join(have) if have else "none; run `kemm-knowledge embed " + source + "`"
        raise EmbeddingError(f"source {source!r} has no embeddings for encoder {encoder_id!r}; available: {listing}; "
                             f"make them with `kemm-knowledge embed {source} --encoder {encoder_id}`")
    return encoder_id


def read_embeddings(
    cache_dir: Path | str,
    source: str,
    encoder_id: str | None = None,
    *,
    expected_identity: dict[str, Any] | None = None,
    mmap: bool = False,
) -> KnowledgeEmbeddings:
    """Load the statement embeddings of ``source`` per case id.

    Args:
        encoder_id: which embedding set; None = the only one, or the default
            encoder's when there are several.
        expected_identity: the identity of the encoder the caller will use
            alongside (``encoder.identity()``); a stored set with another
            dimension or other weights is refused.
        mmap: return read-only views into a memory map of the file instead of
            copies (for sources larger than memory).
    """
    eid = resolve_encoder_id(cache_dir, source, encoder_id)
    edir = embeddings_dir(cache_dir, source)
    stored = load_stored(edir, eid)
    if stored is None:  # pragma: no cover - resolve_encoder_id found the manifest
        raise EmbeddingError(f"no embeddings {edir / eid}.*")
    man, index = stored
    check_current(cache_dir, source, eid, man, index)
    ident = man.get("encoder", {})
    dim = int(man.get("dim", ident.get("dim", 0)))
    if expected_identity is not None:
        diffs = identity_mismatch(ident, expected_identity)
        if diffs:
            raise EmbeddingError(
                f"embeddings of source {source!r} for {eid!r} do not match the encoder in use ({'; '.join(diffs)}); "
                f"re-embed with `kemm-knowledge embed {source} --rebuild` using that encoder"
            )
    data_p = set_paths(edir, eid)[0]
    try:
        return _read_rows(data_p, source, man, index, dim, mmap, eid, ident)
    except SafetensorError as e:
        raise EmbeddingError(f"{data_p}: truncated or corrupt ({e}); rerun `kemm-knowledge embed {source}` "
                             "(it re-encodes a damaged set)") from None


def _read_rows(data_p: Path, source: str, man: dict[str, Any], index: dict[str, Any], dim: int, mmap: bool,
               eid: str, ident: dict[str, Any]) -> KnowledgeEmbeddings:
    """The rows of a consistent set, per case (copies, or views of a memory map)."""
    by_case: dict[str, np.ndarray] = {}
    with safe_open(str(data_p), framework="numpy") as f:
        sl = f.get_slice(TENSOR_NAME)
        shape = tuple(sl.get_shape())
        if len(shape) != 2 or shape[1] != dim or shape[0] != man.get("n_statements"):
            raise EmbeddingError(f"{data_p}: tensor shape {shape} disagrees with its manifest (dim {dim}, "
                                 f"{man.get('n_statements')} statements); rerun `kemm-knowledge embed {source} --rebuild`")
        matrix = _memmap_tensor(data_p, shape) if mmap else None
        for e in index["records"]:
            if matrix is not None:
                by_case[e["case_id"]] = matrix[e["start"] : e["stop"]]
            else:
                by_case[e["case_id"]] = np.asarray(sl[e["start"] : e["stop"]], dtype=np.float32).reshape(-1, dim)
    return KnowledgeEmbeddings(
        source=source,
        encoder_id=eid,
        dim=dim,
        by_case=by_case,
        statements={e["case_id"]: list(e["statements"]) for e in index["records"]},
        keys={e["case_id"]: e["key"] for e in index["records"]},
        identity=ident,
    )


def check_current(cache_dir: Path | str, source: str, encoder_id: str, man: dict[str, Any],
                  index: dict[str, Any]) -> str:
    """Refuse a set that does not encode the source's current ok records; returns their generation.

    A rebuild without ``embed`` would otherwise serve the old statements' vectors while
    ``show`` and the CoxPH covariates read the new records.
    """
    ok = SourceCache(cache_dir, source).ok_by_case()
    current = records_generation(ok)
    stored_keys = {e["case_id"]: e["key"] for e in index.get("records", [])}
    now_keys = {cid: rec.key for cid, rec in ok.items()}
    stored_gen = man.get("records_generation")
    if (stored_gen == current) if stored_gen is not None else (stored_keys == now_keys):
        return current
    added = len(now_keys.keys() - stored_keys.keys())
    gone = len(stored_keys.keys() - now_keys.keys())
    changed = sum(1 for c in now_keys.keys() & stored_keys.keys() if now_keys[c] != stored_keys[c])
    what = f"{added} case(s) new, {changed} changed, {gone} no longer ok" if added or changed or gone else "outputs regenerated"
    enc = "" if encoder_id == DEFAULT_ENCODER_ID else f" --encoder {encoder_id}"
    raise EmbeddingError(
        f"embeddings of knowledge source {source!r} ({encoder_id}) are stale: its records changed since the last "
        f"embed ({what}); run `kemm-knowledge embed {source}{enc}` (it re-encodes only what changed)"
    )


def source_identity(cache_dir: Path | str, source: str, encoder_id: str | None = None) -> dict[str, Any]:
    """The content identity of what a reader of ``source`` gets now (a run records it per source).

    Returns ``{source, records_generation, encoder_id, encoder_weights_sha256, embedding_set}``:
    ``records_generation`` changes with every rebuild that changes a served record;
    ``embedding_set`` hashes the set's index (record keys, statements) and encoder identity, so
    a re-embed that changed nothing keeps it. Raises ``EmbeddingError`` on a stale or torn set.
    """
    eid = resolve_encoder_id(cache_dir, source, encoder_id)
    stored = load_stored(embeddings_dir(cache_dir, source), eid)
    if stored is None:  # pragma: no cover - resolve_encoder_id found the manifest
        raise EmbeddingError(f"source {source!r} has no embeddings for {eid!r}; run `kemm-knowledge embed {source}`")
    man, index = stored
    gen = check_current(cache_dir, source, eid, man, index)
    ident = man.get("encoder", {})
    core = {k: ident.get(k) for k in ("dim", "weights_sha256", "normalize")}
    rows = [[e["case_id"], e["key"], e["statements"]] for e in index.get("records", [])]
    set_id = hashlib.sha256(canonical_json({"encoder": core, "rows": rows}).encode()).hexdigest()
    return {"source": source, "records_generation": gen, "encoder_id": eid,
            "encoder_weights_sha256": ident.get("weights_sha256"), "embedding_set": set_id}


def _memmap_tensor(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-copy read-only view of the single float32 tensor of a safetensors file."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    begin, end = header[TENSOR_NAME]["data_offsets"]
    if end - begin != int(np.prod(shape)) * 4:
        raise EmbeddingError(f"{path}: tensor byte size disagrees with its shape {shape}")
    if not shape[0]:
        return np.zeros(shape, dtype=np.float32)
    return np.memmap(path, dtype=np.float32, mode="r", offset=8 + n + begin, shape=shape)


def write_set(edir: Path, encoder_id: str, matrix: np.ndarray, entries: list[dict[str, Any]],
              manifest: dict[str, Any]) -> None:
    """Write one embedding set: data, then index, then manifest, under a fresh generation id.

    Args:
        matrix: float32 [N, D], rows of ``entries`` in order.
        entries: per record ``{key, case_id, start, stop, statements}``.
        manifest: everything of the manifest but ``generation``.
    """
    gen = uuid.uuid4().hex
    data_p, index_p, man_p = set_paths(edir, encoder_id)
    save_tensor(data_p, matrix, {"generation": gen, "encoder_id": encoder_id, "source": manifest["source"]})
    atomic_write_text(index_p, json.dumps({"generation": gen, "source": manifest["source"], "encoder_id": encoder_id,
                                           "records": entries}, ensure_ascii=False) + "\n")
    atomic_write_text(man_p, json.dumps({"generation": gen, **manifest}, indent=2, sort_keys=True, default=str) + "\n")
