"""The fold-model interface: what cross-validation and prediction ask of any model.

A fold model is trained on one fold's training patients and then predicts for any
patients; its state is saved into the fold's folder of the run directory and
rebuilt from it.  The neural models (``kemm.model.run.neural.NeuralFoldModel``) and
the CoxPH baseline (``kemm.model.linear.CoxPHFoldModel``) both implement it, so
``train.run_fold`` and ``predict.predict_run`` never ask which kind they hold.

Imports: numpy, pandas, ``kemm.model.data``, ``kemm.model.run.config``, ``kemm.model.run.rundir``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from kemm.model.data.dataset import SurvivalData
from kemm.model.run.config import TrainConfig
from kemm.model.run.rundir import FoldFiles


@dataclass
class FoldInputs:
    """What fold models read, fixed for an experiment (or a prediction).

    Attributes:
        data: the patients' modalities (cohort, bags, genomics, knowledge).
        clinical: raw clinical covariates ``[n_patients, C]`` indexed by case id (NaN = missing);
            None where no model of the run uses them.
        train: training settings (neural models' optimiser, epochs, bins, progress bars).
    """

    data: SurvivalData
    clinical: pd.DataFrame | None = None
    train: TrainConfig | None = None


class FoldModel(Protocol):
    """One model of one fold.

    ``name`` is the registry name (``kemm``, ``abmil``, ``coxph`` ...), ``key`` the model's
    label in the run; ``uses_clinical`` says whether ``FoldInputs.clinical`` is needed.
    """

    name: str
    key: str
    uses_clinical: bool

    def fit(self, inputs: FoldInputs, train_ids: list[str], edges: np.ndarray, seed: int) -> FoldModel:
        """Train on ``train_ids``; ``edges`` ``[n_bins + 1]`` are the fold's survival-bin edges."""
        ...

    def predict_risk(self, inputs: FoldInputs, ids: list[str]) -> np.ndarray:
        """Risk ``[n]``; higher = earlier event."""
        ...

    def predict_survival(self, inputs: FoldInputs, ids: list[str], times: np.ndarray) -> np.ndarray:
        """Survival probabilities ``[n, len(times)]`` at ``times``."""
        ...

    def record(self) -> dict[str, Any]:
        """Extra fields for the fold's ``metrics.json`` (training history, covariates used)."""
        ...

    def save(self, fold: FoldFiles) -> None:
        """Write the fitted state into the fold's folder (plain data or a weights-only checkpoint)."""
        ...

    @classmethod
    def load(cls, fold: FoldFiles) -> FoldModel:
        """Rebuild a fitted model from :meth:`save` output; never unpickles."""
        ...
