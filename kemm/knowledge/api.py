"""Public functions of the knowledge half (what the CLI and the pipelines call).

Imports: ``generate`` and ``store``.
"""
from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Any

from kemm.knowledge.generate.backends.base import BackendError
from kemm.knowledge.generate.backends.registry import create_backend
from kemm.knowledge.generate.backends.replicas import RayReplicas
from kemm.knowledge.generate.backends.rules import pbk_cancer_types
from kemm.knowledge.generate.build import BuildSummary, build
from kemm.knowledge.store.cache import SourceCache, default_cache_dir
from kemm.knowledge.store.inputs import (
    DEFAULT_ID_COLUMN,
    DEFAULT_TEXT_COLUMN,
    InputError,
    TaskInput,
    cancer_type_inputs,
    read_reports,
)
from kemm.knowledge.generate.prompts import default_version, load_prompt
from kemm.knowledge.generate.sectioning import apply_sectioning, resolve_version


def run_task(
    task: str,
    inputs: list[TaskInput],
    source: str,
    backend: str = "rules",
    cache_dir: Path | str | None = None,
    backend_options: dict[str, Any] | None = None,
    prompt_version: int | None = None,
    prompts_dir: Path | None = None,
    sampling_overrides: dict[str, Any] | None = None,
    batch_size: int = 16,
    max_attempts: int = 3,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    extra_provenance: dict[str, Any] | None = None,
    sectioning: str | None = None,
    executor: str = "serial",
    address: str | None = None,
    replicas: int = 1,
    gpus_per_replica: float | None = None,
) -> BuildSummary:
    """Run ``task`` over ``inputs`` into ``source``.  ``prompt_version`` None: v1 for the
    rules backend, the highest for LLM backends (``prompts.default_version``).
    ``sectioning`` (refine_report): ``auto`` (default: sections for LLM backends, not for
    rules), a version, or ``none``. ``executor="ray"``: the backend runs as ``replicas`` engine
    actors on the Ray cluster at ``address`` (``backends/replicas.py``); this process validates,
    repairs and writes the cache as a serial build does."""
    if executor not in ("serial", "ray"):
        raise BackendError(f"--executor {executor!r}: expected serial or ray")
    if executor != "ray" and (address is not None or replicas != 1):
        raise BackendError("--address and --replicas place engine replicas on a Ray cluster: use them with --executor ray")
    if prompt_version is None:
        prompt_version = default_version(task, backend, prompts_dir)
    prompt = load_prompt(task, prompt_version, prompts_dir)
    if task == "refine_report":
        inputs = apply_sectioning(inputs, resolve_version(sectioning, backend))
    if task == "pbk" and backend == "rules":
        check_curated_types([i.case_id for i in inputs])  # before anything is created or written
    cache = SourceCache(cache_dir or default_cache_dir(), source)
    options = {k: v for k, v in (backend_options or {}).items() if v is not None}
    if executor == "ray":
        be = RayReplicas(backend, options, replicas=replicas, address=address, gpus_per_replica=gpus_per_replica)
    else:
        be = create_backend(backend, **options)
    if hasattr(be, "preflight"):
        try:
            be.preflight()  # e.g. an unreachable server: stop before the cache is touched
        except BaseException:
            be.close()
            raise
    try:
        return build(
            prompt,
            inputs,
            be,
            cache,
            sampling_overrides=sampling_overrides,
            batch_size=batch_size,
            max_attempts=max_attempts,
            limit=limit,
            progress=progress,
            on_total=on_total,
            extra_provenance=extra_provenance,
        )
    finally:
        be.close()


def check_curated_types(cancer_types: list[str]) -> None:
    """The rules backend's PBK is a curated table: a type it lacks is an input error (InputError),
    named with the known types, before any record is written."""
    known = pbk_cancer_types()
    missing = [ct for ct in cancer_types if ct not in known]
    if missing:
        raise InputError(
            f"--cancer-types: no curated prognostic knowledge for {', '.join(missing)} (rules backend); "
            f"curated types: {', '.join(known)}; check the spelling, add an entry to "
            "kemm/knowledge/rules/pbk_curated.yaml, or use an LLM backend"
        )


def build_reports(
    reports_path: Path | str | list[Path | str],
    source: str,
    backend: str = "rules",
    cache_dir: Path | str | None = None,
    cancer_type: str | None = None,
    id_column: str = DEFAULT_ID_COLUMN,
    text_column: str = DEFAULT_TEXT_COLUMN,
    **kw: Any,
) -> BuildSummary:
    """Refine every report of one or more files into ``source``."""
    paths = reports_path if isinstance(reports_path, list) else [reports_path]
    inputs = report_inputs(paths, id_column, text_column, cancer_type)
    return run_task("refine_report", inputs, source, backend, cache_dir, **kw)


def report_inputs(
    paths: list[Path | str],
    id_column: str = DEFAULT_ID_COLUMN,
    text_column: str = DEFAULT_TEXT_COLUMN,
    cancer_type: str | None = None,
    encoding: str = "utf-8",
) -> list[TaskInput]:
    """Reports of several files, one input per patient (first file wins for a repeated case)."""
    inputs: list[TaskInput] = []
    for p in paths:
        inputs += read_reports(p, id_column=id_column, text_column=text_column, cancer_type=cancer_type,
                               encoding=encoding)
    return merge_duplicate_cases(inputs)


def build_pbk(
    cancer_types: list[str],
    source: str,
    backend: str = "rules",
    cache_dir: Path | str | None = None,
    **kw: Any,
) -> BuildSummary:
    return run_task("pbk", cancer_type_inputs(cancer_types), source, backend, cache_dir, **kw)


def merge_duplicate_cases(inputs: list[TaskInput]) -> list[TaskInput]:
    """Cases that appear in several files (e.g. LUNG and a subset) keep their first input."""
    seen: dict[str, TaskInput] = {}
    for inp in inputs:
        seen.setdefault(inp.case_id, inp)
    return list(seen.values())


def read_outputs(cache_dir: Path | str, source: str) -> dict[str, dict[str, Any]]:
    """Validated outputs of a source, per case id (records with status ok only).

    The public read path for consumers other than the embedding reader, e.g. the
    CoxPH baseline that takes stage and grade from refined reports.
    """
    cache = SourceCache(cache_dir, source)
    cache.read_manifest()  # a clear error when the source does not exist
    return {case: out for case, rec in cache.by_case().items() if (out := rec.ok_output) is not None}
