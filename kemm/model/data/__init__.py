"""Data of the model half: everything between files on disk and a padded batch.

cohort (patient table), splits (folds), genomics (groups, scaler), bags (WSI feature
files: read and write), clinical (covariates for linear models), knowledge (statement
embedding tables), dataset (patients -> ``Batch``), batch (the typed batch contract),
synthetic (a generated cohort with known truth).

Imports: numpy, pandas, torch, h5py, ``kemm._io``, ``kemm.model.errors``,
``kemm.model.run.config`` (column maps and data sections), ``kemm.model.nn.losses``
(bins), and the knowledge half only as ``kemm.knowledge`` (``knowledge.py``, ``clinical.py``).
"""
