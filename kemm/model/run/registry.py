"""Fold-model registry: a model name of a config -> the :class:`FoldModel` class that runs it.

Networks are built by name in ``kemm.model.nn.registry``; every one of them runs as a
:class:`~kemm.model.run.neural.NeuralFoldModel`.  Linear models (``kemm.model.linear``)
have their own fold-model classes, listed in ``LINEAR``.

Imports: ``kemm.model.linear``, ``kemm.model.nn.registry``, ``kemm.model.run`` (config, foldmodel, neural).
"""
from __future__ import annotations

import typing
from typing import Any

from pydantic import TypeAdapter, ValidationError

from kemm.model.errors import ConfigError
from kemm.model.linear.coxph import CoxPHClinical, CoxPHFoldModel
from kemm.model.linear.text_genomics import TextGenomicsFoldModel
from kemm.model.nn.registry import hparam_types as network_hparam_types
from kemm.model.nn.registry import known_models as known_networks
from kemm.model.run.config import ExperimentConfig, ModelEntry, model_clinical
from kemm.model.run.foldmodel import FoldModel
from kemm.model.run.neural import NeuralFoldModel

LINEAR: dict[str, type] = {"coxph": CoxPHFoldModel, "coxph_text_genomics": TextGenomicsFoldModel}


def known_models() -> list[str]:
    """Every model name a config may use."""
    return [*known_networks(), *LINEAR]


def hparam_types(name: str) -> dict[str, Any]:
    """Declared type per hyperparameter of model ``name`` ({} where the estimator takes ``**params``)."""
    if name == "coxph":
        hints = typing.get_type_hints(CoxPHClinical.__init__)
        return {k: v for k, v in hints.items() if k != "return"}
    if name in LINEAR:
        return {}
    return network_hparam_types(name)


def check_models(cfg: ExperimentConfig) -> None:
    """Every model name known and every hyperparameter of its declared type, before any work (ConfigError)."""
    known = known_models()
    for m in cfg.models:
        if m.name not in known:
            raise ConfigError(f"models: unknown model {m.name!r}; known models: {', '.join(known)}")
        try:
            m.train_config(cfg.train)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if m.train and m.name in LINEAR:
            raise ConfigError(f"model {m.key!r}: `train` settings apply to neural models only; {m.name} has none")
        types = hparam_types(m.name)
        for k, v in m.hparams.items():
            if k not in types:
                continue  # unknown names are refused, with the accepted list, when the model is built
            try:
                TypeAdapter(types[k]).validate_python(v, strict=True)
            except ValidationError:
                want = getattr(types[k], "__name__", str(types[k]))
                raise ConfigError(f"model {m.key!r}: hparams.{k} is {v!r}, expected {want}") from None


def fold_model_class(name: str) -> type:
    """The fold-model class of registry name ``name`` (networks share one)."""
    return LINEAR.get(name, NeuralFoldModel)


def new_fold_model(entry: ModelEntry, cfg: ExperimentConfig, desc: str = "") -> FoldModel:
    """An unfitted fold model for a config's model entry."""
    if entry.name in LINEAR:
        return LINEAR[entry.name](entry.key, entry.hparams)
    return NeuralFoldModel(entry.name, entry.key, entry.hparams, entry.train_config(cfg.train), desc, clinical=model_clinical(entry, cfg))
