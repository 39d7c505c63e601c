"""Helpers the local-model and server backends share: checkpoint folders (a path or a
packaged model's name), option and sampling checks, library versions.

Imports: the standard library, ``backends.base`` and ``generate.catalog`` (packaged models).
"""
from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path
from typing import Any

from kemm.knowledge.generate import catalog
from kemm.knowledge.generate.backends.base import BackendError

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "max_tokens", "seed", "repetition_penalty")
_FINGERPRINT_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
)


def checkpoint_dir(model: str | None, backend: str) -> Path:
    """The local checkpoint directory named by ``--model`` (checked, absolute)."""
    if not model:
        raise BackendError(f"the {backend} backend needs --model PATH, a local checkpoint directory")
    p = Path(model).expanduser()
    if not p.is_dir() and catalog.is_packaged(model):
        p = catalog.prepare(model)  # a named packaged model: converted once into the user cache
    if not p.is_dir():
        raise BackendError(
            f"--model {model!r} is not a directory; the {backend} backend loads a local checkpoint "
            "(a folder with config.json and weights), e.g. from `huggingface-cli download ... --local-dir`, "
            f"or a packaged model ({', '.join(sorted(catalog.CATALOG))}; see `kemm-knowledge models`)"
        )
    if not (p / "config.json").is_file():
        raise BackendError(f"--model {model!r}: no config.json in that folder; is it a checkpoint directory?")
    return p.resolve()


def checkpoint_revision(path: Path) -> str:
    """A revision for a local checkpoint: the hub commit when the folder is a hub
    snapshot (``.../snapshots/<sha>``), else a fingerprint of its config and
    tokenizer files and of the weight files' names and sizes (cheap for 70B)."""
    if path.parent.name == "snapshots" and len(path.name) == 40:
        return path.name
    packaged = catalog.provenance(path)
    if packaged is not None:  # the GGUF's sha256 is the weights' identity
        return "gguf-sha256:" + str(packaged["gguf_sha256"])[:16]
    h = hashlib.sha256()
    for name in _FINGERPRINT_FILES:
        f = path / name
        if f.is_file():
            h.update(name.encode() + b"\0" + f.read_bytes())
    for f in sorted(path.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".pt", ".gguf"):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return "local-" + h.hexdigest()[:16]


def check_options(
    backend: str, options: dict[str, Any], allowed: tuple[str, ...], api_only: tuple[str, ...] = ()
) -> None:
    """Refuse CLI options a backend does not use (a silent no-op hides a mistake).
    ``api_only`` options are accepted but not CLI flags (from Python, e.g. tests)."""
    extra = sorted(k for k, v in options.items() if v is not None and k not in allowed + api_only)
    if extra:
        flags = ", ".join("--" + k.replace("_", "-") for k in extra)
        raise BackendError(
            f"the {backend} backend does not use {flags}; its options are: "
            + ", ".join("--" + k.replace("_", "-") for k in allowed)
        )


def check_sampling(backend: str, sampling: dict[str, Any], known: tuple[str, ...] = SAMPLING_KEYS) -> None:
    unknown = sorted(set(sampling) - set(known))
    if unknown:
        raise BackendError(
            f"{backend} backend: unknown sampling parameter(s) {unknown}; known: {list(known)}"
        )


def lib_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
