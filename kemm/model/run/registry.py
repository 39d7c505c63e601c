"""Fold-model registry: a model name of a config -> the :class:`FoldModel` class that runs it.

Networks are built by name in ``kemm.model.nn.registry``; every one of them runs as a
:class:`~kemm.model.run.neural.NeuralFoldModel`.  Linear models (``kemm.model.linear``)
have their own fold-model classes, listed in ``LINEAR``.

Imports: ``kemm.model.linear``, ``kemm.model.nn.registry``, ``kemm.model.run`` (config, foldmodel, neural).
"""
from __future__ import annotations

from kemm.model.linear.coxph import CoxPHFoldModel
from kemm.model.linear.text_genomics import TextGenomicsFoldModel
from kemm.model.nn.registry import known_models as known_networks
from kemm.model.run.config import ExperimentConfig, ModelEntry, model_clinical
from kemm.model.run.foldmodel import FoldModel
from kemm.model.run.neural import NeuralFoldModel

LINEAR: dict[str, type] = {"coxph": CoxPHFoldModel, "coxph_text_genomics": TextGenomicsFoldModel}


def known_models() -> list[str]:
    """Every model name a config may use."""
    return [*known_networks(), *LINEAR]


def fold_model_class(name: str) -> type:
    """The fold-model class of registry name ``name`` (networks share one)."""
    return LINEAR.get(name, NeuralFoldModel)


def new_fold_model(entry: ModelEntry, cfg: ExperimentConfig, desc: str = "") -> FoldModel:
    """An unfitted fold model for a config's model entry."""
    if entry.name in LINEAR:
        return LINEAR[entry.name](entry.key, entry.hparams)
    return NeuralFoldModel(entry.name, entry.key, entry.hparams, cfg.train, desc, clinical=model_clinical(entry, cfg))
