"""kemm: knowledge-enhanced multimodal survival models.

Commands: demo (offline end-to-end run on a synthetic cohort), train, ablate,
evaluate, predict.  Knowledge building lives in ``kemm-knowledge``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import typer

from kemm.model.cli import fail, out, print_results, register

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])

# Model-side commands: train, ablate, evaluate, predict.
register(app)


@app.command()
def demo(
    work_dir: Path = typer.Option(Path("runs/demo"), "--work-dir", help="Where the cohort, knowledge cache and run go."),
    patients: int = typer.Option(300, "--patients", help="Synthetic patients."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs per fold."),
    seed: int = typer.Option(0, "--seed"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Offline end-to-end demo: synthetic cohort -> rules knowledge -> 5-fold CV of KEMM and baselines."""
    from kemm.model.cohort import DataError
    from kemm.model.train import RunError
    from kemm.pipelines import run_demo

    logging.basicConfig(level=logging.WARNING)
    try:
        res = run_demo(work_dir, n_patients=patients, epochs=epochs, seed=seed, progress=not quiet,
                       log=lambda m: out.print(m, highlight=False))
    except (DataError, RunError) as e:
        fail(str(e))
    print_results(res.run_dir, title=f"kemm demo: 5-fold CV on {patients} synthetic patients")
    timing = ", ".join(f"{k} {v:.0f}s" for k, v in res.timings.items())
    out.print(f"run directory: {res.run_dir}   ({res.seconds:.0f}s: {timing})", highlight=False)


@app.command()
def benchmark(
    exp_dir: Path = typer.Argument(Path("experiments/tcga"), help="Folder of cohort configs + base.yaml."),
    data_root: Path = typer.Option(..., "--data-root", help="The raw data folder (shared/data/raw)."),
    out_dir: Path = typer.Option(None, "--out", help="Where RESULTS.md, results.csv, folds.csv and runs/ go (default: EXP_DIR)."),
    cache_dir: Path = typer.Option(Path("knowledge_cache"), "--cache-dir", help="Knowledge cache for the real-report sources."),
    cohorts: str = typer.Option("", "--cohorts", help="Comma-separated subset, e.g. blca,luad."),
    override: list[str] = typer.Option([], "--set", help="Config override for every cohort, e.g. train.epochs=2 (repeatable)."),
) -> None:
    """Real TCGA benchmark: knowledge from real reports; KEMM, ablations and baselines on the published splits."""
    from kemm.benchmark import BenchmarkError, run_benchmark
    from kemm.knowledge import KnowledgeError as CacheError
    from kemm.model.cohort import DataError
    from kemm.model.config import ConfigError
    from kemm.model.train import RunError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        out = run_benchmark(exp_dir, data_root, out_dir=out_dir, cache_dir=cache_dir,
                            cohorts=[c for c in cohorts.split(",") if c] or None, overrides=override)
    except (BenchmarkError, CacheError, ConfigError, DataError, RunError) as e:
        fail(str(e))
    typer.echo(f"results: {out / 'RESULTS.md'}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
