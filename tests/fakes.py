"""Scripted backends for tests of the knowledge core (no LLM)."""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np

from kemm.knowledge.generate.backends.base import GenerationResult

# A source identity for tests that write records directly.
IDENTITY = {"task": "refine_report", "prompt_name": "refine_report", "prompt_version": 1, "prompt_sha": "p",
            "schema_name": "RefinedReport", "schema_sha": "s", "backend": "test", "model_id": "m",
            "model_revision": None, "sampling": {}}

VALID_REPORT = {
    "histologic_type": "urothelial carcinoma",
    "grade": "high grade",
    "pT": "T2a",
    "pN": "N0",
    "pM": "not reported",
    "stage_group": "II",
    "tumor_size": "3.5 cm",
    "nodes_positive": 0,
    "nodes_examined": 12,
    "margin_status": "negative",
    "lymphovascular_invasion": "absent",
    "perineural_invasion": "not reported",
    "key_statements": ["High grade invasive urothelial carcinoma."],
    "summary": "High grade urothelial carcinoma invading muscularis propria, nodes negative.",
}


class ScriptedBackend:
    """Returns scripted texts per case id: a list consumed one attempt at a time
    (the last entry repeats). Default: a valid RefinedReport."""

    name = "scripted"

    def __init__(self, script: dict[str, list[str]] | None = None, delay: float = 0.0, model_id: str = "scripted-1"):
        self.script = script or {}
        self.delay = delay
        self.model_id = model_id
        self.calls: list[list[str]] = []  # case ids per generate() call
        self.seen_messages: list[list[dict[str, str]]] = []
        self._pos: dict[str, int] = {}

    def generate(self, requests, schema, sampling):
        ids = [r.inputs.get("case_id") or r.inputs.get("cancer_type") for r in requests]
        self.calls.append(ids)
        out = []
        for cid, r in zip(ids, requests):
            self.seen_messages.append(r.messages)
            if self.delay:
                time.sleep(self.delay)
            seq = self.script.get(cid, [json.dumps(VALID_REPORT)])
            i = self._pos.get(cid, 0)
            self._pos[cid] = i + 1
            out.append(GenerationResult(text=seq[min(i, len(seq) - 1)], finish_reason="stop", latency_s=0.001))
        return out

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "model_revision": "r1"}

    def close(self) -> None:
        pass

    @property
    def n_generated(self) -> int:
        return sum(len(c) for c in self.calls)


def write_reports_csv(path, n: int = 5, start: int = 0) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pdf_file_name_path", "ocr_text"])
        for i in range(start, start + n):
            w.writerow([f"TCGA-ZZ-{i:04d}.ABC.PDF", f"Invasive urothelial carcinoma, high grade, pT2a N0, case {i}. " * 3])


class HashEncoder:
    """Deterministic fake encoder (no model), counting what it encodes."""

    def __init__(self, dim: int = 8, encoder_id: str = "hash-enc", weights: str = "w1"):
        self.dim, self.encoder_id, self.weights = dim, encoder_id, weights
        self.calls: list[list[str]] = []

    def identity(self) -> dict:
        return {"encoder_id": self.encoder_id, "name": "hash", "dim": self.dim, "weights_sha256": self.weights, "normalize": True}

    def encode(self, texts, batch_size=64):
        self.calls.append(list(texts))
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest(), dtype=np.uint8)[: self.dim].astype(np.float32)
                for t in texts]
        return np.stack(rows).astype(np.float32)

    @property
    def n_encoded(self) -> int:
        return sum(len(c) for c in self.calls)


class AttemptScriptedBackend:
    """Like ``ScriptedBackend`` but with no state: the answer depends only on the request (its case
    id and attempt number, read from the conversation's length), so engine replicas that each hold
    one instance answer a retried request exactly as a single instance would."""

    name = "attempt-scripted"

    def __init__(self, script: dict[str, list[str]] | None = None, model_id: str = "attempt-scripted-1"):
        self.script = script or {}
        self.model_id = model_id

    def generate(self, requests, schema, sampling):
        out = []
        for r in requests:
            cid = r.inputs.get("case_id") or r.inputs.get("cancer_type")
            seq = self.script.get(cid, [json.dumps(VALID_REPORT)])
            attempt = (len(r.messages) - 2) // 2  # system + user, then assistant + feedback per retry
            out.append(GenerationResult(text=seq[min(attempt, len(seq) - 1)], finish_reason="stop", latency_s=0.001))
        return out

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "model_revision": "r1"}

    def close(self) -> None:
        pass


def rules_knowledge(syn, cache) -> None:
    """The design's knowledge for a synthetic cohort, no LLM: rules reports ``rep``, their field
    sentences ``rep-fields`` and PBK grounded in each patient ``rep-grounded`` (static ``pbk``),
    every source embedded with the HashEncoder."""
    from kemm.knowledge import build_pbk, build_reports, derive_fields, derive_grounded_pbk, embed_source
    build_reports(syn.reports_csv, "rep", backend="rules", cache_dir=cache, cancer_type=syn.cancer_type)
    build_pbk([syn.cancer_type], "pbk", backend="rules", cache_dir=cache)
    derive_fields(cache, "rep", "rep-fields")
    derive_grounded_pbk(cache, "rep", "pbk", "rep-grounded", cancer_type=syn.cancer_type)
    enc = HashEncoder()
    for s in ("rep", "rep-fields", "rep-grounded"):
        embed_source(cache, s, enc, progress=False)
