"""Neural survival models: encoders, KECM attention, KEMM, neural baselines, losses.

Every network takes a ``kemm.model.data.batch.Batch`` and returns a ``ModelOutput``;
``registry.py`` builds one by name from a ``ModelSpec``.

Imports: torch, numpy, ``kemm.model.data.batch``; nothing that reads files.
"""
