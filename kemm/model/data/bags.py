"""WSI patch-feature bags, read lazily per slide.

One file per slide in ``features_dir`` (or its CLAM/TRIDENT subfolders
``pt_files/``, ``h5_files/``, ``features/``), named after the slide id with or
without its extension (``TCGA-...-DX1.<uuid>.pt`` for ``TCGA-...-DX1.<uuid>.svs``):

- ``.pt``: a ``[N, D]`` tensor, or a dict with a ``"features"`` tensor; loaded
  with ``torch.load(weights_only=True)`` so no code in the file runs;
- ``.h5``: dataset ``features`` ``[N, D]`` (``[1, N, D]`` is squeezed), optional ``coords``.

A patient's slides are concatenated into one bag ``[N_total, D]``.

Writing (``write_bag``, ``convert_features_dir``): the layout that reads fastest.
``load_slide_features`` returns float32 whatever the stored dtype, so a float16 bag
halves the bytes read per patient at the cost of rounding each feature to 11
significant bits (relative error <= 2^-11; values beyond +-65504 are refused);
``tests/model/data/test_bench_equivalence.py`` checks model outputs stay within
tolerance. ``.pt`` is a plain ``[N, D]`` tensor (readable with ``weights_only=True``);
``.h5`` has dataset ``features`` ``[N, D]``, contiguous by default, optional ``coords``.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from kemm._io import atomic_path
from kemm.model.errors import DataError

SLIDE_EXTS = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif")
FEATURE_EXTS = (".pt", ".h5")
SUBDIRS = ("", "pt_files", "h5_files", "features", "feats_pt", "feats_h5")


def slide_stem(slide_id: str) -> str:
    s = str(slide_id)
    for ext in SLIDE_EXTS:
        if s.lower().endswith(ext):
            return s[: -len(ext)]
    return s


def load_slide_features(path: Path | str) -> torch.Tensor:
    """Features of one slide, ``[N, D]`` float32."""
    path = Path(path)
    if path.suffix == ".pt":
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt file or a pickle that weights_only refuses
            raise DataError(f"{path}: cannot read as a tensor file with weights_only=True ({e})") from None
        if isinstance(obj, dict):
            if "features" not in obj:
                raise DataError(f"{path}: dict without a 'features' entry (keys {sorted(obj)[:10]})")
            obj = obj["features"]
        if not isinstance(obj, torch.Tensor):
            raise DataError(f"{path}: expected a [N, D] tensor or {{'features': tensor}}, got {type(obj).__name__}")
        x = obj
    elif path.suffix == ".h5":
        try:
            with h5py.File(path, "r") as f:
                if "features" not in f:
                    raise DataError(f"{path}: no 'features' dataset (datasets: {list(f.keys())})")
                x = torch.from_numpy(np.asarray(f["features"][()]))
        except OSError as e:
            raise DataError(_h5_error(path, e)) from None
    else:
        raise DataError(f"{path}: unknown feature file type (expected .pt or .h5)")
    if x.dim() == 3 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 2:
        raise DataError(f"{path}: features have shape {tuple(x.shape)}, expected [N, D]")
    return x.float()


def _h5_error(path: Path, e: OSError) -> str:
    return (f"{path}: cannot read as HDF5 ({str(e).splitlines()[0] if str(e) else type(e).__name__}); the file is "
            "truncated or not an HDF5 feature file: re-extract this slide's features (CLAM/TRIDENT) or remove it")


def _check_finite(x: torch.Tensor, path: Path, case_id: str) -> None:
    """NaN/inf features give NaN risks downstream (a blank risk grouped "low"): refuse them at the source."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        rows = torch.nonzero(bad.any(dim=1)).flatten()
        raise DataError(
            f"{path}: patch features of case {case_id!r} are non-finite (NaN/inf) in {len(rows)} of {x.shape[0]} "
            f"patches (first at row {int(rows[0])}); re-extract this slide's features or remove the file "
            "(data.missing_slides: mask then treats the case as having no slides)"
        )


def feature_dim(path: Path) -> int:
    """D without reading the whole array where the format allows."""
    if path.suffix == ".h5":
        try:
            with h5py.File(path, "r") as f:
                if "features" not in f:
                    raise DataError(f"{path}: no 'features' dataset (datasets: {list(f.keys())})")
                return int(f["features"].shape[-1])
        except OSError as e:
            raise DataError(_h5_error(path, e)) from None
    return int(load_slide_features(path).shape[-1])


class BagStore:
    """Maps case ids to their slides' feature files; loads bags on demand.

    Args:
        features_dir: folder with the per-slide files.
        slides: case_id -> slide ids.
        missing: "error" (a listed slide without a file is an error) or "mask"
            (the slide is skipped; a patient left with no slide has no WSI).
        cache: keep loaded bags in memory.
    """

    def __init__(self, features_dir: Path | str, slides: dict[str, list[str]], missing: str = "error", cache: bool = False):
        self.dir = Path(features_dir)
        if not self.dir.is_dir():
            raise DataError(f"{self.dir}: features directory not found (data.features_dir)")
        self._index = self._scan()
        self.files: dict[str, list[Path]] = {}
        self.missing: dict[str, list[str]] = {}
        for case, sids in slides.items():
            found = []
            for sid in sids:
                p = self._index.get(slide_stem(sid))
                if p is None:
                    self.missing.setdefault(case, []).append(sid)
                else:
                    found.append(p)
            self.files[case] = found
        if self.missing and missing == "error":
            case, sids = next(iter(self.missing.items()))
            n = sum(len(v) for v in self.missing.values())
            raise DataError(
                f"{self.dir}: no feature file for slide {sids[0]!r} of case {case!r} "
                f"(looked for {slide_stem(sids[0])}.pt / .h5 in {self.dir} and its {', '.join(SUBDIRS[1:])} folders); "
                f"{n} slide(s) missing in all. Set data.missing_slides: mask to train with those patients' WSI masked."
            )
        first = next((fs[0] for fs in self.files.values() if fs), None)
        self.dim: int | None = feature_dim(first) if first is not None else None
        self._cache: dict[str, torch.Tensor] | None = {} if cache else None

    def _scan(self) -> dict[str, Path]:
        index: dict[str, Path] = {}
        for sub in SUBDIRS:
            d = self.dir / sub if sub else self.dir
            if not d.is_dir():
                continue
            for p in d.iterdir():
                if p.suffix in FEATURE_EXTS and p.is_file():
                    # .pt wins over .h5 for the same slide (faster to load)
                    stem = p.stem
                    if stem not in index or p.suffix == ".pt":
                        index[stem] = p
        return index

    def has(self, case_id: str) -> bool:
        return bool(self.files.get(case_id))

    def load(self, case_id: str) -> torch.Tensor | None:
        """The patient's bag ``[N, D]`` (slides concatenated), or None without slides."""
        if self._cache is not None and case_id in self._cache:
            return self._cache[case_id]
        paths = self.files.get(case_id) or []
        if not paths:
            return None
        parts = []
        for p in paths:
            x = load_slide_features(p)
            if self.dim is not None and x.shape[1] != self.dim:
                raise DataError(
                    f"{p}: features of case {case_id!r} have dimension {x.shape[1]}, "
                    f"expected {self.dim} like the other slides in {self.dir}"
                )
            _check_finite(x, p, case_id)
            parts.append(x)
        bag = torch.cat(parts, 0) if len(parts) > 1 else parts[0]
        if self._cache is not None:
            self._cache[case_id] = bag
        return bag


def sample_patches(bag: torch.Tensor, max_patches: int | None, generator: torch.Generator | None) -> torch.Tensor:
    """Random subset of at most ``max_patches`` rows (training only; evaluation sees every patch)."""
    if max_patches is None or bag.shape[0] <= max_patches:
        return bag
    idx = torch.randperm(bag.shape[0], generator=generator)[:max_patches]
    return bag[idx.sort().values]

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
    """Write one slide's features ``[N, D]`` atomically (``kemm._io.atomic_path``).

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
    with atomic_path(path) as tmp:
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
