"""The real-TCGA benchmark: knowledge from real reports; KEMM, its ablations and baselines.

``kemm benchmark experiments/tcga --data-root ../shared/data/raw`` runs, per cohort config
``experiments/tcga/<cohort>.yaml`` merged over ``base.yaml``:

1. ``sources.py``: the knowledge sources (rules, imported LLM, derived field sentences and
   grounded PBK, curated PBK), embedded with every encoder a profile names;
2. ``specs.py``: one CV run per (cohort, knowledge profile) with that profile's models;
3. ``selection.py`` (``--select``): the nested choice between candidate designs on inner splits
   of the training folds (SELECTION.md);
4. ``results.py``: RESULTS.md, results.csv, folds.csv and the figures.

Every step is resumable. This package spans both halves and calls each only through its public
functions (``kemm.knowledge``) or the model half's run API.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from kemm._io import atomic_write_text
from kemm.benchmark.results import paired_tests, published_folds, write_results
from kemm.benchmark.selection import candidates, choose, merge_inner, render_selection, run_selection, selection_groups
from kemm.benchmark.sources import build_sources
from kemm.benchmark.specs import BenchmarkError, experiment_configs, experiment_plan, load_cohort_specs
from kemm.model.run.config import ExperimentConfig
from kemm.model.run.executor import run_on_ray
from kemm.model.run.registry import check_models
from kemm.model.run.train import run_experiment

__all__ = ["BenchmarkError", "load_cohort_specs", "paired_tests", "published_folds", "run_benchmark"]
log = logging.getLogger(__name__)
TRIAL_OUT = Path("runs/benchmark")  # where a run with overrides or a cohort subset goes unless --out is given


def _write_selection(inner, bench_base: dict, out_dir: Path) -> None:
    groups = selection_groups(bench_base)
    choice = choose(inner, groups)
    inner.to_csv(out_dir / "selection_inner.csv", index=False)
    choice.to_csv(out_dir / "selection.csv", index=False)
    atomic_write_text(out_dir / "SELECTION.md", render_selection(inner, choice, groups))


def _check_rows(bench_base: dict, rows: list[str] | None, select: bool = False) -> None:
    """``--rows`` names only rows of ``benchmark.experiments`` (BenchmarkError listing them); with
    ``select``, only candidates of ``benchmark.selection``."""
    if rows and select:
        candidates(bench_base, rows)
    if rows:
        known = {m.get("label") or m["name"] for _, ms in experiment_plan(bench_base) for m in ms}
        unknown = sorted(set(rows) - known)
        if unknown:
            raise BenchmarkError(f"--rows: unknown row(s) {', '.join(unknown)}; rows: {', '.join(sorted(known))}")


def run_benchmark(
    exp_dir: Path,
    data_root: Path,
    out_dir: Path | None = None,
    cache_dir: Path | None = None,
    cohorts: list[str] | None = None,
    overrides: list[str] | None = None,
    derived_root: Path | None = None,
    select: bool = False,
    stages: tuple[str, ...] = ("sources", "runs", "results"),
    profiles: list[str] | None = None,
    rows: list[str] | None = None,
    command: str | None = None,
    executor: str = "serial",
    address: str | None = None,
    carry: Path | None = None,
) -> Path:
    """Build sources, run every experiment (or, with ``select``, the nested design choice), write results.

    Without ``out_dir``, a run with ``overrides`` or a ``cohorts`` subset writes to ``runs/benchmark``
    (never over the committed results in ``exp_dir``); only a full default run writes to ``exp_dir``.
    ``command`` is the exact command line, named in RESULTS.md. ``executor="ray"`` runs every
    (cohort/profile, model, fold) of the runs stage as one Ray task (``kemm.model.run.executor``;
    ``address``: the cluster); the nested selection (``select``) runs here. ``carry``: an earlier
    run's folds.csv; its rows that have no run here are reported too (``results.carry_folds``).
    """
    exp_dir, data_root = Path(exp_dir), Path(data_root)
    if not data_root.is_dir():
        raise BenchmarkError(f"--data-root {data_root}: no such folder (expected shared/data/raw)")
    if out_dir is None and (overrides or cohorts):
        out_dir = TRIAL_OUT
        log.info("overrides or a cohort subset: writing to %s (pass --out %s to replace the committed results)",
                 out_dir, exp_dir)
    out_dir = Path(out_dir or exp_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir or "knowledge_cache")
    bench_base, specs = load_cohort_specs(exp_dir, cohorts)
    _check_rows(bench_base, rows, select)  # before the sources stage: a typo costs no build
    timings: dict[str, float] = {}
    if "sources" in stages:
        t0 = time.perf_counter()
        build_sources(specs, bench_base, data_root, cache_dir)
        timings["knowledge_s"] = round(time.perf_counter() - t0, 1)
    if select:
        inner = run_selection(specs, bench_base, data_root, cache_dir, out_dir, overrides or [], only=rows)
        if rows:  # new candidates beside the inner results already in out_dir (same splits, same settings)
            inner = merge_inner(out_dir / "selection_inner.csv", inner)
        _write_selection(inner, bench_base, out_dir)
        return out_dir
    run_dirs: dict[str, dict[str, Path]] = {}
    settings: dict = {"command": command, "cohorts": [s.cohort for s in specs], "overrides": list(overrides or [])}
    plans = {spec.cohort: experiment_configs(spec, bench_base, data_root, cache_dir, out_dir, overrides or [])
             for spec in specs}
    for cfgs in plans.values():  # every model name and hyperparameter, before anything trains
        for _, cfg in cfgs:
            check_models(cfg)
    on_ray: list[tuple[str, ExperimentConfig]] = []
    for spec in specs:
        run_dirs[spec.cohort] = {}
        for profile, cfg in plans[spec.cohort]:
            todo = cfg if not rows else cfg.model_copy(update={"models": [m for m in cfg.models if m.key in rows]})
            if "runs" in stages and (profiles is None or profile in profiles) and todo.models:
                if executor == "ray":
                    on_ray.append((f"{spec.cohort}/{profile}", todo))
                else:
                    log.info("cohort %s: profile %s (%d models)", spec.cohort, profile, len(todo.models))
                    tc = time.perf_counter()
                    run_experiment(todo)
                    timings[f"{spec.cohort}/{profile}"] = round(time.perf_counter() - tc, 1)
            run_dirs[spec.cohort][profile] = Path(cfg.output_dir or cfg.run_dir)
            settings.setdefault("train", cfg.train.model_dump(mode="json", exclude={"progress", "num_threads"}))
    if on_ray:  # every fold run of every experiment at once: the cluster is never idle between cohorts
        log.info("%d experiments (cohort/profile) on Ray", len(on_ray))
        swept = run_on_ray([cfg for _, cfg in on_ray], address=address)
        timings.update({name: s for (name, _), s in zip(on_ray, swept.seconds)})
    if "results" in stages:
        derived = Path(derived_root) if derived_root else data_root.parent / "derived"
        write_results(out_dir, specs, run_dirs, derived, timings, bench_base, settings, carry=carry)
    return out_dir
