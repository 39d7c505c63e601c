"""Every path and file format of a run directory, in one class.

Layout::

    config.yaml                               resolved config (absolute paths)
    run.json                                  identity, kemm version, data coverage, status
    splits/splits_<k>.csv                     the folds used (published or generated)
    folds/<model>/fold_<k>/model.pt           neural fold model: torch checkpoint (tensors and plain data;
                                              read with ``weights_only=True``)
    folds/<model>/fold_<k>/model.json         linear fold model: coefficients, encoding, baseline hazard
    folds/<model>/fold_<k>/predictions.csv    out-of-fold predictions
    folds/<model>/fold_<k>/metrics.json       fold metrics; written last = the fold is done
    predictions.csv                           pooled out-of-fold predictions of every model
    metrics.json, results.csv, results.md, km.json, km_<model>.png   (``evaluate.summarize_run``)

Nothing here unpickles: a ``model.pkl`` (CoxPH folds written by kemm before plain-data
saving) is refused with a message pointing to ``kemm run upgrade``, the one command that
loads such a file, and only when the user runs it.

Imports: numpy/pandas/torch, ``kemm._io``, ``kemm.model.errors``.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from kemm._io import atomic_path, atomic_write_json, atomic_write_text
from kemm.model.errors import RunError

LEGACY_PICKLE = "model.pkl"
FOLD_FILES = ("metrics.json", "predictions.csv", "model.pt", "model.json", LEGACY_PICKLE)  # what a fold folder holds
_FOLD_RE = re.compile(r"^fold_(\d+)$")


def _is_fold_file(name: str) -> bool:
    """A file a fold folder holds, or an interrupted atomic write of one (``.<name>.XXXX.tmp``)."""
    return name in FOLD_FILES or (name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in FOLD_FILES))


def legacy_pickle_message(path: Path) -> str:
    return (
        f"{path}: a pickled fold model (written by an older kemm) is never loaded by kemm, since unpickling a file can run "
        f"arbitrary code; if you trust this run directory, re-save it as plain data with `kemm run upgrade "
        f"{path.parents[3]}` and run the command again"
    )


@dataclass(frozen=True)
class FoldFiles:
    """The files of one (model, fold) of a run."""

    dir: Path
    model: str
    k: int

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.json"

    @property
    def predictions_path(self) -> Path:
        return self.dir / "predictions.csv"

    @property
    def torch_path(self) -> Path:
        return self.dir / "model.pt"

    @property
    def json_path(self) -> Path:
        return self.dir / "model.json"

    @property
    def pickle_path(self) -> Path:
        return self.dir / LEGACY_PICKLE

    @property
    def done(self) -> bool:
        return self.metrics_path.is_file()

    def read_metrics(self) -> dict:
        return json.loads(self.metrics_path.read_text())

    def write_metrics(self, record: dict) -> None:
        atomic_write_text(self.metrics_path, json.dumps(record, indent=2, default=float) + "\n")

    def write_predictions(self, df: pd.DataFrame) -> None:
        write_csv(df, self.predictions_path)

    def read_predictions(self) -> pd.DataFrame:
        return pd.read_csv(self.predictions_path)

    # -- fold-model state: torch checkpoint or plain JSON -------------------------------
    def write_torch(self, state: dict[str, Any]) -> None:
        with atomic_path(self.torch_path) as tmp:
            torch.save(state, tmp)

    def read_torch(self) -> dict[str, Any]:
        """A checkpoint of tensors and plain data; ``weights_only=True`` so no code in the file runs."""
        if not self.torch_path.is_file():
            self._missing("model.pt")
        try:
            return torch.load(self.torch_path, map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt, or holds objects weights_only refuses
            raise RunError(f"{self.torch_path}: not a kemm checkpoint readable with weights_only=True ({e})") from None

    def write_json(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.json_path, state)

    def read_json(self) -> dict[str, Any]:
        if not self.json_path.is_file():
            self._missing("model.json")
        try:
            return json.loads(self.json_path.read_text())
        except json.JSONDecodeError as e:
            raise RunError(f"{self.json_path}: not valid JSON ({e})") from None

    def _missing(self, name: str) -> None:
        if self.pickle_path.is_file():
            raise RunError(legacy_pickle_message(self.pickle_path))
        raise RunError(f"{self.dir}: no {name} (the fold's model file); retrain with `kemm train --restart`")


class RunDir:
    """A run directory written by ``kemm train`` (see the module docstring for its layout)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # -- top-level files ---------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def run_json_path(self) -> Path:
        return self.root / "run.json"

    @property
    def splits_dir(self) -> Path:
        return self.root / "splits"

    @property
    def folds_root(self) -> Path:
        return self.root / "folds"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def results_md(self) -> Path:
        return self.root / "results.md"

    @property
    def predictions_path(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def km_json(self) -> Path:
        return self.root / "km.json"

    def km_png(self, model: str) -> Path:
        return self.root / f"km_{model}.png"

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def write_text(self, path: Path, text: str) -> None:
        atomic_write_text(path, text)

    def write_json(self, path: Path, obj: Any) -> None:
        atomic_write_text(path, json.dumps(obj, indent=2, default=float) + "\n")

    def read_run_json(self) -> dict:
        return json.loads(self.run_json_path.read_text())

    def run_warnings(self) -> list[str]:
        """The run's warnings (run.json ``warnings``: e.g. patients whose PBK is masked); [] without a run.json."""
        return self.read_run_json().get("warnings", []) if self.run_json_path.is_file() else []

    def write_run_json(self, obj: dict) -> None:
        atomic_write_text(self.run_json_path, json.dumps(obj, indent=2) + "\n")

    def read_km(self) -> dict:
        return json.loads(self.km_json.read_text()) if self.km_json.is_file() else {}

    # -- folds -------------------------------------------------------------------------
    def fold(self, model: str, k: int) -> FoldFiles:
        return FoldFiles(self.folds_root / model / f"fold_{k}", model, k)

    def models_with_folds(self) -> list[str]:
        """Model keys with a folder under ``folds/`` (sorted)."""
        if not self.folds_root.is_dir():
            return []
        return sorted(p.name for p in self.folds_root.iterdir() if p.is_dir())

    def folds_of(self, model: str, done_only: bool = True) -> list[FoldFiles]:
        """The folds of ``model`` in fold order (only finished ones unless ``done_only=False``)."""
        d = self.folds_root / model
        out = []
        for p in d.glob("fold_*") if d.is_dir() else []:
            m = _FOLD_RE.match(p.name)
            if m and p.is_dir():
                f = FoldFiles(p, model, int(m.group(1)))
                if f.done or not done_only:
                    out.append(f)
        return sorted(out, key=lambda f: f.k)

    def fold_records(self, model: str) -> list[dict]:
        """``metrics.json`` of every finished fold of ``model``, in fold order."""
        return [f.read_metrics() for f in self.folds_of(model)]

    def all_fold_records(self) -> list[dict]:
        """``metrics.json`` of every finished fold of every model, ordered by path (model, then fold name)."""
        paths = sorted(self.folds_root.glob("*/fold_*/metrics.json")) if self.folds_root.is_dir() else []
        return [json.loads(p.read_text()) for p in paths]

    def fold_predictions(self, model: str) -> list[pd.DataFrame]:
        """Out-of-fold predictions of ``model``, ordered by path (as the pooled file has always been)."""
        return [pd.read_csv(p) for p in sorted((self.folds_root / model).glob("fold_*/predictions.csv"))]

    def legacy_pickle_folds(self) -> list[FoldFiles]:
        """Folds holding a ``model.pkl`` (read only by ``kemm run upgrade``)."""
        return [f for m in self.models_with_folds() for f in self.folds_of(m, done_only=False) if f.pickle_path.is_file()]

    def clear_folds(self) -> list[Path]:
        """Remove the files kemm writes under ``folds/`` (``FOLD_FILES``, and the folders they leave
        empty); anything else is kept and returned, so ``--restart`` never deletes a user's file."""
        kept: list[Path] = []
        if not self.folds_root.is_dir():
            return kept
        for p in sorted(self.folds_root.rglob("*"), key=lambda q: len(q.parts), reverse=True):
            rel = p.relative_to(self.folds_root).parts
            ours = len(rel) == 3 and _FOLD_RE.match(rel[1]) and _is_fold_file(p.name)
            if p.is_file() or p.is_symlink():
                if ours:
                    p.unlink()
                else:
                    kept.append(p)
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        if self.folds_root.is_dir() and not any(self.folds_root.iterdir()):
            self.folds_root.rmdir()
        return sorted(kept)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
