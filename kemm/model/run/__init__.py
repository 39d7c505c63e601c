"""Running experiments: config, fold models, run directory, train, evaluate, predict.

config (experiment YAML), foldmodel (the ``FoldModel`` interface), neural (networks as
fold models), registry (model name -> fold-model class), rundir (every path and file
format of a run directory), train (cross-validation), evaluate (summaries), predict
(fold-ensembled predictions), metrics, plots, upgrade (re-save old pickled folds).

Imports: the rest of ``kemm.model``, ``kemm._io``; train -> evaluate (never back),
predict never imports train.
"""
