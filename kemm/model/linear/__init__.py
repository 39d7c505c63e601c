"""Linear survival models: penalised Cox models on tabular covariates.

One file per model: ``coxph.py`` (CoxPH on clinical covariates).  Each exposes an
sklearn-like estimator (``fit`` returns ``self``, fitted attributes end in ``_``,
state saved as plain data, never pickled) and a fold-model adapter the
cross-validation harness uses.

Imports: numpy, pandas, lifelines (lazily), ``kemm.model.data``, ``kemm.model.run.foldmodel``
and ``kemm.model.run.rundir``; never torch models.
"""
from __future__ import annotations

from kemm.model.linear.coxph import CoxPHClinical, CoxPHFoldModel

__all__ = ["CoxPHClinical", "CoxPHFoldModel"]
