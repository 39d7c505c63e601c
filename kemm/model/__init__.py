"""Model half of kemm: data, networks, linear baselines and the cross-validation harness.

Rooms (one folder per stage of the data's path):

- ``data/``   cohort tables, splits, genomics, WSI bags, clinical covariates, knowledge
              tables, the patient dataset and the typed batch contract, synthetic cohorts;
- ``nn/``     encoders, KECM attention, KEMM, neural baselines, losses, the network registry;
- ``linear/`` penalised Cox models on tabular covariates (saved as plain data);
- ``run/``    experiment config, fold models, run directory, training, evaluation,
              prediction, metrics, plots.

This module is the half's public API: the names in ``__all__``, resolved lazily (PEP 562)
so ``import kemm.model`` stays cheap.  The model half reads the knowledge half only
through ``kemm.knowledge``'s public API (never its submodules) and never calls an LLM.
"""
from __future__ import annotations

from kemm._lazy import lazy_module


# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "ModelError": "kemm.model.errors",
    "ConfigError": "kemm.model.errors",
    "DataError": "kemm.model.errors",
    "RunError": "kemm.model.errors",
    "Batch": "kemm.model.data.batch",
    "Cohort": "kemm.model.data.cohort",
    "load_cohort": "kemm.model.data.cohort",
    "SurvivalData": "kemm.model.data.dataset",
    "build_data": "kemm.model.data.dataset",
    "TextTable": "kemm.model.data.knowledge",
    "make_synthetic_cohort": "kemm.model.data.synthetic",
    "truth_knowledge": "kemm.model.data.synthetic",
    "ModelSpec": "kemm.model.nn.registry",
    "build_model": "kemm.model.nn.registry",
    "CoxPHClinical": "kemm.model.linear.coxph",
    "ExperimentConfig": "kemm.model.run.config",
    "load_config": "kemm.model.run.config",
    "parse_config": "kemm.model.run.config",
    "FoldModel": "kemm.model.run.foldmodel",
    "RunDir": "kemm.model.run.rundir",
    "known_models": "kemm.model.run.registry",
    "run_experiment": "kemm.model.run.train",
    "summarize_run": "kemm.model.run.evaluate",
    "predict_run": "kemm.model.run.predict",
    "upgrade_run": "kemm.model.run.upgrade",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_module("kemm.model", _EXPORTS, globals())
