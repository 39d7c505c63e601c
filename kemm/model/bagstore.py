"""Writing WSI patch-feature bags in the layout that reads fastest (a companion of ``bags.py``).

``kemm.model.bags.load_slide_features`` reads any ``.pt`` / ``.h5`` bag and returns float32,
whatever the stored dtype, so a float16 bag needs no change on the reading side: it halves
the bytes read per patient (and the disk and page-cache footprint) and costs one
``half -> float`` conversion, which is exact. What float16 storage loses is the rounding of
each feature to 11 significant bits (relative error <= 2^-11 ~ 4.9e-4, values beyond
+-65504 overflow and are refused here); ``tests/test_bench_equivalence.py`` checks that
model outputs stay within tolerance.

Layouts written by :func:`write_bag`:

- ``.pt``: a plain ``[N, D]`` tensor (``torch.save``), readable with ``weights_only=True``;
- ``.h5``: dataset ``features`` ``[N, D]``, contiguous by default (a whole-bag read is one
  sequential read; chunking and compression only pay off for partial reads), optional
  ``coords``. ``chunk_rows`` / ``compression`` are there to measure the alternatives.
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch

from kemm.model.bags import FEATURE_EXTS, load_slide_features

DTYPES = {"float32": np.float32, "float16": np.float16}
_F16_MAX = float(np.finfo(np.float16).max)


def _as_numpy(features: torch.Tensor | np.ndarray, dtype: str) -> np.ndarray:
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features have shape {x.shape}, expected [N, D]")
    if dtype == "float16" and x.size and float(np.abs(x).max()) > _F16_MAX:
        raise ValueError(f"features exceed the float16 range (max |x| = {float(np.abs(x).max()):.3g} > {_F16_MAX}); store as float32")
    return np.ascontiguousarray(x, dtype=DTYPES[dtype])


def write_bag(
    path: Path | str,
    features: torch.Tensor | np.ndarray,
    dtype: str = "float16",
    coords: np.ndarray | None = None,
    chunk_rows: int | None = None,
    compression: str | None = None,
) -> Path:
    """Write one slide's features ``[N, D]`` atomically (temporary file, then ``os.replace``).

    Args:
        path: ``<slide>.pt`` or ``<slide>.h5``; the suffix picks the format.
        dtype: ``"float16"`` (half the bytes) or ``"float32"``.
        coords: optional ``[N, 2]`` patch coordinates (``.h5`` only).
        chunk_rows: ``.h5`` only: rows per HDF5 chunk; None = contiguous.
        compression: ``.h5`` only: e.g. ``"gzip"`` / ``"lzf"`` (needs chunking; default rows = 1024).
    """
    path = Path(path)
    if path.suffix not in FEATURE_EXTS:
        raise ValueError(f"{path}: unknown feature file type (expected one of {FEATURE_EXTS})")
    x = _as_numpy(features, dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.suffix == ".pt":
            torch.save(torch.from_numpy(x), tmp)
        else:
            kw: dict = {}
            if compression is not None:
                kw["compression"] = compression
                chunk_rows = chunk_rows or 1024
            if chunk_rows is not None:
                kw["chunks"] = (min(chunk_rows, max(len(x), 1)), x.shape[1])
            with h5py.File(tmp, "w") as f:
                f.create_dataset("features", data=x, **kw)
                if coords is not None:
                    f.create_dataset("coords", data=np.asarray(coords))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def convert_features_dir(
    src: Path | str,
    dst: Path | str,
    fmt: str = ".h5",
    dtype: str = "float16",
    chunk_rows: int | None = None,
    compression: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Rewrite every ``.pt`` / ``.h5`` bag of ``src`` into ``dst`` as ``fmt`` / ``dtype``.

    File stems are kept, so a ``BagStore`` pointed at ``dst`` finds the same slides. ``.h5``
    coordinates are carried over. Existing outputs are kept unless ``overwrite``.
    """
    src, dst = Path(src), Path(dst)
    if fmt not in FEATURE_EXTS:
        raise ValueError(f"fmt {fmt!r}; expected one of {FEATURE_EXTS}")
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: features directory not found")
    out = []
    for p in sorted(src.iterdir()):
        if p.suffix not in FEATURE_EXTS or not p.is_file():
            continue
        target = dst / f"{p.stem}{fmt}"
        if target.exists() and not overwrite:
            out.append(target)
            continue
        coords = None
        if p.suffix == ".h5" and fmt == ".h5":
            with h5py.File(p, "r") as f:
                coords = np.asarray(f["coords"][()]) if "coords" in f else None
        out.append(write_bag(target, load_slide_features(p), dtype, coords, chunk_rows, compression))
    return out
