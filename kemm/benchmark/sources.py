"""The benchmark's knowledge sources, built (or reused) from the cohorts' real report files.

Per cohort: a ``rules`` source (deterministic extractor), an ``llm`` source (the outputs an LLM
already wrote, imported from the tcga-path-report ``llm_output`` column), and from each of
them a ``<role>-fields`` source (one sentence per validated field) and a ``<role>-grounded``
source (the curated PBK matched to each patient's report); a ``report-sentences`` source (the
report's own diagnostic sentences, no LLM); one curated PBK source for every cancer type.
Every source is embedded with every encoder a profile names. All steps are cached and resumable
(a rebuild with nothing changed writes nothing).

Imports: ``kemm.knowledge`` (public API), ``kemm.benchmark.specs``.
"""
from __future__ import annotations

import logging
from pathlib import Path

from kemm.benchmark.specs import PBK_SOURCE, ROLES, BenchmarkError, CohortSpec, source_name
from kemm.knowledge import (
    build_pbk,
    build_reports,
    derive_fields,
    derive_grounded_pbk,
    derive_report_sentences,
    embed_source,
    import_file,
    load_encoder,
    report_inputs,
)

log = logging.getLogger(__name__)


def encoder_roles(bench_base: dict) -> dict[str | None, set[str] | None]:
    """Encoder -> the source roles it must embed (None = the default encoder: every source)."""
    out: dict[str | None, set[str] | None] = {None: None}
    for p in (bench_base.get("profiles") or {}).values():
        if p and p.get("encoder"):
            roles = out.setdefault(p["encoder"], set())
            roles.update(p.get("report") or [], p.get("pbk") or [])  # type: ignore[union-attr]
    return out


def _report_files(spec: CohortSpec, data_root: Path) -> list[Path]:
    files = [data_root / f for f in spec.bench.get("reports", [])]
    for f in files:
        if not f.is_file():
            raise BenchmarkError(f"{spec.path}: report file {f} does not exist (check --data-root)")
    return files


def build_cohort_sources(spec: CohortSpec, data_root: Path, cache_dir: Path) -> list[str]:
    """Build, import and derive one cohort's sources; returns their names."""
    files = _report_files(spec, data_root)
    if not files:
        return []
    c, ct = spec.cohort, spec.bench["cancer_type"]
    rules, llm = source_name(c, "rules"), source_name(c, "llm")
    log.info("%s: %s", rules, build_reports(files, rules, backend="rules", cache_dir=cache_dir, cancer_type=ct).line())
    for f in files:
        imp = import_file(f, "tcga-path-report", llm, cache_dir, model_name="unknown (as published)")
        log.info("%s: %s ok, %s failed (parse rate %.3f)", llm, imp.ok, imp.failed, imp.parse_rate)
    names = [rules, llm]
    for parent_role in ("rules", "llm"):
        parent = source_name(c, parent_role)
        fields, grounded = source_name(c, f"{parent_role}-fields"), source_name(c, f"{parent_role}-grounded")
        log.info("%s: %s", fields, derive_fields(cache_dir, parent, fields).line())
        log.info("%s: %s", grounded, derive_grounded_pbk(cache_dir, parent, PBK_SOURCE, grounded, ct).line())
        names += [fields, grounded]
    sentences = source_name(c, "report-sentences")
    log.info("%s: %s", sentences, derive_report_sentences(cache_dir, report_inputs(files, cancer_type=ct), sentences).line())
    return names + [sentences]


def build_sources(specs: list[CohortSpec], bench_base: dict, data_root: Path, cache_dir: Path) -> None:
    """Every cohort's sources and the curated PBK, embedded with every encoder the profiles use."""
    # Every encoder a profile names is loaded first (once, shared by every source): a missing
    # optional encoder is reported before any source is built, not after.
    encoders = {name: (load_encoder(name), roles) for name, roles in encoder_roles(bench_base).items()}
    types = sorted({s.bench["cancer_type"] for s in specs})
    log.info("pbk: %s", build_pbk(types, PBK_SOURCE, backend="rules", cache_dir=cache_dir).line())
    for spec in specs:
        build_cohort_sources(spec, data_root, cache_dir)
    for enc, roles in encoders.values():
        for role in sorted(roles if roles is not None else ROLES):
            names = {source_name(s.cohort, role) for s in specs if s.bench.get("reports") or role == "pbk"}
            for n in sorted(names):
                embed_source(cache_dir, n, encoder=enc, progress=False)
