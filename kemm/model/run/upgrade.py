"""``kemm run upgrade``: re-save a run's pickled CoxPH fold models as plain data.

kemm before plain-data saving wrote CoxPH fold models as ``model.pkl``.  Unpickling runs
whatever code the file names, so no other command loads these files (``rundir.py``
refuses them).  This module is the one place that unpickles, and only when the user
runs ``kemm run upgrade RUN`` on a run directory they trust: each ``model.pkl`` is
loaded, written as ``model.json`` (``CoxPHClinical.to_state``) and removed.

Imports: pickle, ``kemm.model.linear``, ``kemm.model.run.rundir``.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from kemm.model.errors import RunError
from kemm.model.linear.coxph import CoxPHClinical, CoxPHFoldModel
from kemm.model.run.rundir import FoldFiles, RunDir

# Where CoxPHClinical lived when the pickles were written.
_MOVED = {("kemm.model.baselines", "CoxPHClinical"): CoxPHClinical}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle protocol
        return _MOVED.get((module, name)) or super().find_class(module, name)


def _upgrade_fold(files: FoldFiles) -> None:
    with open(files.pickle_path, "rb") as f:
        obj = _Unpickler(f).load()  # the user asked for this: `kemm run upgrade` on a trusted run
    cox = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(cox, CoxPHClinical):
        raise RunError(f"{files.pickle_path}: not a kemm CoxPH fold model (found {type(cox).__name__})")
    if not hasattr(cox, "coef_"):
        cox.capture(cox.model_)
    fm = CoxPHFoldModel(files.model, {"penalizer": cox.penalizer, "l1_ratio": cox.l1_ratio})
    fm.model, fm.edges = cox, np.asarray(obj.get("edges"), float) if obj.get("edges") is not None else None
    fm.save(files)
    files.pickle_path.unlink()


def upgrade_run(run_dir: Path | str) -> list[Path]:
    """Convert every ``model.pkl`` of ``run_dir`` to ``model.json``; returns the JSON files written."""
    run = RunDir(run_dir)
    if not run.is_run():
        raise RunError(f"{run.root}: not a run directory (no config.yaml)")
    written = []
    for files in run.legacy_pickle_folds():
        _upgrade_fold(files)
        written.append(files.json_path)
    return written
