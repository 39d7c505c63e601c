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


# Later top-level commands (e.g. `benchmark`) register here, next to `demo`.


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
