"""Benchmark configuration: cohort specs, knowledge profiles and the experiments they expand to.

``experiments/tcga/base.yaml`` holds, under ``benchmark:``,

- ``profiles``: named knowledge configurations. ``report`` / ``pbk`` list source *roles*
  (``rules``, ``llm``, ``pbk``, ``rules-fields``, ``rules-grounded``, ``llm-fields``,
  ``llm-grounded``), resolved per cohort to source names (``tcga-<cohort>-<role>``; ``pbk``
  is the curated PBK of every cancer type); ``encoder`` names the text encoder;
- ``experiments``: ``{profile, models}`` pairs; each runs as one CV run per cohort in
  ``<out>/runs/<cohort>/<profile>``; model labels are unique over all experiments;
- ``selection``: the candidate rows of the nested design choice (see ``selection.py``);
- ``pairs``: the paired comparisons RESULTS.md reports.

Imports: yaml, ``kemm.model.run.config``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kemm.model.run.config import ExperimentConfig, apply_overrides, parse_config

PBK_SOURCE = "tcga-pbk-curated"
ROLES = ("rules", "llm", "pbk", "rules-fields", "rules-grounded", "llm-fields", "llm-grounded", "report-sentences")


class BenchmarkError(ValueError):
    """A benchmark config or input that cannot be used; the message names the file and key."""


@dataclass
class CohortSpec:
    path: Path
    bench: dict[str, Any]  # the cohort file's `benchmark:` section (cohort, cancer_type, reports)
    config: dict[str, Any]  # the cohort config merged over base.yaml (without `benchmark:`)

    @property
    def cohort(self) -> str:
        return str(self.bench["cohort"])


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def format_paths(obj: Any, **subs: str) -> Any:
    if isinstance(obj, str):
        try:
            return obj.format(**subs)
        except (KeyError, IndexError) as e:
            raise BenchmarkError(f"unknown placeholder {e} in {obj!r}; known: {sorted(subs)}") from None
    if isinstance(obj, dict):
        return {k: format_paths(v, **subs) for k, v in obj.items()}
    if isinstance(obj, list):
        return [format_paths(v, **subs) for v in obj]
    return obj


def _read_yaml(path: Path) -> Any:
    """The parsed file; a YAML syntax error is a BenchmarkError naming the file, line and column."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise BenchmarkError(f"{path}:{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None


def load_cohort_specs(exp_dir: Path, cohorts: list[str] | None = None) -> tuple[dict, list[CohortSpec]]:
    """``(benchmark section of base.yaml, [spec])``; unknown cohorts are an error listing the known ones."""
    base_path = exp_dir / "base.yaml"
    if not base_path.is_file():
        raise BenchmarkError(f"{base_path}: missing (models and train settings shared by every cohort)")
    base = _read_yaml(base_path) or {}
    specs, known = [], []
    for p in sorted(exp_dir.glob("*.yaml")):
        if p.name == "base.yaml" or p.name.startswith("smoke"):
            continue
        raw = _read_yaml(p) or {}
        bench = raw.pop("benchmark", None)
        if not isinstance(bench, dict) or "cohort" not in bench:
            raise BenchmarkError(f"{p}: needs a `benchmark:` section with at least `cohort:`")
        known.append(bench["cohort"])
        if cohorts and bench["cohort"] not in cohorts:
            continue
        specs.append(CohortSpec(p, bench, deep_merge({k: v for k, v in base.items() if k != "benchmark"}, raw)))
    if cohorts:
        missing = sorted(set(cohorts) - set(known))
        if missing:
            raise BenchmarkError(f"no config for cohort(s) {missing} in {exp_dir}; known cohorts: {', '.join(known)}")
    if not specs:
        raise BenchmarkError(f"no cohort configs in {exp_dir}")
    return base.get("benchmark", {}), specs


def source_name(cohort: str, role: str) -> str:
    if role not in ROLES:
        raise BenchmarkError(f"unknown knowledge role {role!r} in a benchmark profile; roles: {', '.join(ROLES)}")
    return PBK_SOURCE if role == "pbk" else f"tcga-{cohort}-{role}"


def profile_knowledge(bench_base: dict, profile: str, cohort: str, cache_dir: Path) -> dict[str, Any]:
    """The ``knowledge:`` section of profile ``profile`` for ``cohort``."""
    profiles = bench_base.get("profiles") or {}
    if profile not in profiles:
        raise BenchmarkError(f"base.yaml: benchmark.experiments names profile {profile!r}; profiles: {sorted(profiles)}")
    p = profiles[profile] or {}
    unknown = set(p) - {"report", "pbk", "encoder", "kind_values"}
    if unknown:
        raise BenchmarkError(f"base.yaml: benchmark.profiles.{profile}: unknown key(s) {sorted(unknown)}")
    k: dict[str, Any] = {"cache_dir": str(cache_dir)}
    for key in ("report", "pbk"):
        roles = p.get(key) or []
        if roles:
            k[key] = [source_name(cohort, r) for r in roles]
    if p.get("encoder"):
        k["encoder"] = p["encoder"]
    if "kind_values" in p:
        k["kind_values"] = bool(p["kind_values"])
    return k


def experiment_plan(bench_base: dict) -> list[tuple[str, list[dict]]]:
    """``[(profile, [model entry])]`` from ``benchmark.experiments``; labels checked unique."""
    plan = bench_base.get("experiments") or []
    if not plan:
        raise BenchmarkError("base.yaml: benchmark.experiments is empty (a list of {profile, models})")
    out, seen = [], set()
    for e in plan:
        models = [m if isinstance(m, dict) else {"name": m} for m in e.get("models", [])]
        for m in models:
            key = m.get("label") or m["name"]
            if key in seen:
                raise BenchmarkError(f"base.yaml: model label {key!r} appears twice in benchmark.experiments")
            seen.add(key)
        out.append((e["profile"], models))
    return out


def experiment_configs(spec: CohortSpec, bench_base: dict, data_root: Path, cache_dir: Path, out_dir: Path,
                       overrides: list[str], only: set[str] | None = None) -> list[tuple[str, ExperimentConfig]]:
    """One validated config per (profile, models) experiment of this cohort (rows in ``only``, if given)."""
    cfg = format_paths(spec.config, data_root=str(data_root))
    cfg = apply_overrides(cfg, overrides)
    cfg.setdefault("data", {})["reports"] = [str(data_root / f) for f in spec.bench.get("reports", [])]
    runs = []
    for profile, models in experiment_plan(bench_base):
        if only is not None:
            models = [m for m in models if (m.get("label") or m["name"]) in only]
        if not models:
            continue
        c = copy.deepcopy(cfg)
        c["name"] = f"tcga-{spec.cohort}-{profile}"
        c["output_dir"] = str(out_dir / "runs" / spec.cohort / profile)
        c["knowledge"] = profile_knowledge(bench_base, profile, spec.cohort, cache_dir)
        c["models"] = models
        runs.append((profile, parse_config(c, f"{spec.path} (profile {profile})")))
    return runs
