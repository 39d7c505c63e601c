"""kemm: knowledge-enhanced multimodal survival models.

Commands: demo (offline end-to-end run on a synthetic cohort), train, ablate, compare,
evaluate, predict, explain, benchmark, run upgrade.  Knowledge building lives in ``kemm-knowledge``.
Exit codes: 0 ok, 2 config/data errors (one line naming file, key, case), 1 unexpected errors.

This module spans both halves: it imports ``kemm.model`` modules, the knowledge half
only through ``kemm.knowledge`` (its public API), and ``kemm.pipelines`` / ``kemm.benchmark``.
"""
from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kemm import __version__
from kemm.benchmark import BenchmarkError, run_benchmark
from kemm.compare import compare_runs
from kemm.knowledge import KnowledgeError
from kemm.model.errors import ModelError
from kemm.model.run.config import ModelEntry, load_config
from kemm.model.run.evaluate import LABELS, METRICS, load_run, partial_run_warning, summarize_run
from kemm.model.run.executor import EXECUTORS, run_on_ray
from kemm.model.run.explain import CaseExplanation, cohort_summary, explain_all, explain_case, open_run, write_case, write_cohort
from kemm.model.run.predict import predict_run
from kemm.model.run.rundir import RunDir
from kemm.model.run.train import run_experiment
from kemm.model.run.upgrade import upgrade_run
from kemm.pipelines import run_demo

console = Console(stderr=True)
# Piped output (logs, CI) gets a fixed width so the results table is not wrapped.
out = Console() if sys.stdout.isatty() else Console(width=120)


def fail(msg: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)  # one line; msg may hold [brackets]
    raise typer.Exit(code)


def print_results(run_dir: Path, title: str | None = None, folds: bool = False) -> None:
    """The results table of a run (mean ± std over folds), plus KM plot paths."""
    cfg, metrics = load_run(run_dir)
    if not metrics:
        fail(f"{run_dir}: no finished fold yet")
    t = Table(title=title or f"{cfg.name}  ({run_dir})", title_justify="left")
    t.add_column("model")
    t.add_column("folds", justify="right")
    for k in METRICS:
        t.add_column(LABELS[k], justify="right")
    for m, d in metrics.items():
        t.add_row(m, str(d["n_folds"]), *[_fmt(d["mean"][k], d["std"][k]) for k in METRICS])
    out.print(t)
    if folds:
        for m, d in metrics.items():
            ft = Table(title=f"{m}: per fold", title_justify="left")
            for c in ("fold", "n_train", "n_val", *METRICS, "seconds"):
                ft.add_column(c, justify="right")
            for r in d["folds"]:
                ft.add_row(*[_cell(r.get(c)) for c in ("fold", "n_train", "n_val", *METRICS, "seconds")])
            out.print(ft)
    rd = RunDir(run_dir)
    for w in rd.run_warnings():
        out.print(f"warning: {escape(w)}", highlight=False, soft_wrap=True)
    km = rd.read_km()
    if km:
        main = cfg.main if cfg.main in km else next(iter(km), None)
        if main:
            p = km[main]["logrank_p"]
            out.print(f"KM plot ({main}): {km[main]['path']}  (log-rank p = {p:.2e})", highlight=False, soft_wrap=True)


def _fmt(m: float, s: float) -> str:
    return "n/a" if m != m else f"{m:.3f} ± {s:.3f}"


def _cell(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _run(config: Path, overrides: list[str], output_dir: Optional[Path], restart: bool, models: Optional[str], quiet: bool,
         data_root: Optional[Path] = None, executor: str = "serial", address: Optional[str] = None) -> Path:
    _check_executor(executor, address)
    ov = list(overrides)
    if output_dir is not None:
        ov.append(f"output_dir={output_dir}")
    if quiet:
        ov.append("train.progress=false")
    try:
        cfg = load_config(config, ov, data_root=data_root)
        if models:
            keep = [s.strip() for s in models.split(",") if s.strip()]
            by_key = {m.key: m for m in cfg.models}
            cfg.models = [by_key.get(k) or ModelEntry(name=k) for k in keep]
        if executor == "ray":
            return run_on_ray([cfg], address=address, restart=restart).run_dirs[0]
        return run_experiment(cfg, restart=restart)
    except ModelError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted; run the same command again to resume at the first unfinished fold", 130)
    raise AssertionError  # pragma: no cover


def _check_executor(executor: str, address: Optional[str]) -> None:
    if executor not in EXECUTORS:
        fail(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    if address is not None and executor != "ray":
        fail("--address names a Ray cluster: use it with --executor ray")


SetOpt = typer.Option([], "--set", help="Override a config key, e.g. --set train.epochs=5 (repeatable).")
ExecutorOpt = typer.Option("serial", "--executor", help="serial (default): fold runs one after another in this process; "
                           "ray: each (model, fold) a Ray task (pip install 'kemm[ray]').")
AddressOpt = typer.Option(None, "--address", help="With --executor ray: the Ray cluster, e.g. auto (this node's, after "
                          "`ray start`) or HOST:6379 [default: a local cluster for this command].")
DataRootOpt = typer.Option(None, "--data-root", help="Folder that {data_root} in the config stands for, e.g. ../shared/data/raw "
                           "(or set $KEMM_DATA_ROOT).")


# Plain (click) help: no `<bool>` after flags, and `[...]` in help texts is shown, not eaten as rich markup.
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0], rich_markup_mode=None)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kemm {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the kemm version and exit.")) -> None:
    """kemm: knowledge-enhanced multimodal survival models (knowledge building: kemm-knowledge)."""


@app.command()
def train(
    config: Path = typer.Argument(..., help="Experiment YAML (experiments/template.yaml), or a cohort config of a "
                                  "benchmark folder (experiments/tcga/blca.yaml, merged over its base.yaml)."),
    set_: list[str] = SetOpt,
    data_root: Optional[Path] = DataRootOpt,
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="Run directory [default: config output_dir or runs/<name>]."),
    restart: bool = typer.Option(False, "--restart", help="Discard finished folds of this run directory."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    executor: str = ExecutorOpt,
    address: Optional[str] = AddressOpt,
) -> None:
    """Cross-validated training of every model of a config; resumes an interrupted run."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    run_dir = _run(config, set_, output_dir, restart, None, quiet, data_root, executor, address)
    print_results(run_dir)


@app.command()
def ablate(
    config: Path = typer.Argument(..., help="Experiment YAML whose model list is the ablation."),
    models: Optional[str] = typer.Option(None, "--models", help="Comma-separated model names/labels to run instead of the config's list."),
    set_: list[str] = SetOpt,
    data_root: Optional[Path] = DataRootOpt,
    output_dir: Optional[Path] = typer.Option(None, "--output-dir"),
    restart: bool = typer.Option(False, "--restart"),
    quiet: bool = typer.Option(False, "--quiet"),
    executor: str = ExecutorOpt,
    address: Optional[str] = AddressOpt,
) -> None:
    """Run an ablation: the config's models (or --models) on the same folds, one table.

    Swapping knowledge sources is a config change: --set knowledge.report=<other source>
    with another --output-dir.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    run_dir = _run(config, set_, output_dir, restart, models, quiet, data_root, executor, address)
    print_results(run_dir, title=f"ablation ({run_dir})")


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by `kemm train`."),
    folds: bool = typer.Option(True, "--folds/--no-folds", help="Per-fold details."),
    refresh: bool = typer.Option(True, "--refresh/--no-refresh", help="Rewrite metrics.json, tables and KM plots from the fold artifacts."),
) -> None:
    """Metrics table (mean ± std), per-fold details and KM plots of a run."""
    if not RunDir(run_dir).is_run():
        fail(f"{run_dir}: not a run directory (no config.yaml)")
    if refresh:
        summarize_run(run_dir)
    print_results(run_dir, folds=folds)
    warning = partial_run_warning(run_dir)
    if warning:
        console.print(f"[yellow]{escape(warning)}[/]", highlight=False, soft_wrap=True)


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="A run directory written by `kemm train`."),
    cohort: Path = typer.Option(..., "--cohort", help="Cohort table of the new patients (same columns as training)."),
    out_path: Path = typer.Option(..., "--out", help="CSV to write: risk, risk group, survival curve."),
    model: Optional[str] = typer.Option(None, "--model", help="Model of the run [default: the main model]."),
    features_dir: Optional[Path] = typer.Option(None, "--features-dir", help="Patch features of the new slides [default: the run's]."),
) -> None:
    """Fold-ensembled risk and survival curve for new patients."""
    try:
        df = predict_run(run_dir, cohort, model, features_dir)
    except (ModelError, FileNotFoundError) as e:
        fail(str(e))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_path, index=False)
    out.print(f"wrote {len(df)} predictions ({df['model'].iloc[0]}, {sum(c.startswith('risk_fold') for c in df.columns)} folds) to {out_path}", highlight=False, soft_wrap=True)


def _print_case(e: CaseExplanation) -> None:
    t = Table(title=f"{e.case_id}: {e.model}, fold {e.fold} (out-of-fold), risk {e.risk:.3f}", title_justify="left")
    for c in ("#", "source", "kind", "weight", "statement"):
        t.add_column(c, justify="right" if c in ("#", "weight") else "left")
    groups = list(e.tokens[0].omic) if e.tokens and e.tokens[0].omic else []
    if groups:
        t.add_column("top genomic group")
    for tok in e.tokens:
        row = [str(tok.position), tok.source, tok.kind, f"{tok.weight:.3f}", tok.text]
        if groups:
            g = max(tok.omic, key=tok.omic.get)
            row.append(f"{g} {tok.omic[g]:.2f}")
        t.add_row(*row)
    out.print(t)


@app.command()
def explain(
    run_dir: Path = typer.Argument(..., help="A run directory written by `kemm train`."),
    case: Optional[str] = typer.Argument(None, help="Case id of one patient of the run (omit with --cohort)."),
    cohort: bool = typer.Option(False, "--cohort", help="Mean pooling weight per statement kind over all out-of-fold patients."),
    model: Optional[str] = typer.Option(None, "--model", help="Model of the run [default: the main model]."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for the CSV/JSON/PNG [default: RUN/explain]."),
) -> None:
    """Which knowledge a trained model used: a patient's knowledge tokens with their pooling weights.

    The patient is explained by the fold model whose validation fold holds it (out-of-fold).
    Writes <case>.csv/.json/.png (or cohort.csv/.png with --cohort) to --out.
    """
    if (case is None) == (not cohort):
        fail("give either a CASE id or --cohort (not both)")
    dest = out_dir or Path(run_dir) / "explain"
    try:
        if case is not None:
            e = explain_case(run_dir, case, model)
            _print_case(e)
            stem = case if model is None else f"{case}_{model}"
            paths = write_case(e, dest, stem)
        else:
            ctx = open_run(run_dir, model)
            expls = explain_all(ctx)
            summary = cohort_summary(expls)
            n_tok = sum(1 for x in expls if x.tokens)
            title = (f"{ctx.cfg.name}: {ctx.model}, {n_tok} of {len(expls)} out-of-fold patients with knowledge tokens; "
                     "blue = report, orange = PBK")
            paths = write_cohort(summary, dest, title, "cohort" if model is None else f"cohort_{model}")
            out.print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"), highlight=False)
    except (ModelError, KnowledgeError) as e:
        fail(str(e))
    out.print("wrote " + ", ".join(str(p) for p in paths.values()), highlight=False)


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="Two or more run directories of one cohort; the first is the reference."),
    out_dir: Path = typer.Option(Path("compare"), "--out", help="Folder for compare.md, compare_folds.csv, km_<run>.png."),
    model: Optional[str] = typer.Option(None, "--model", help="Model of the KM figures (default: each run's main model)."),
) -> None:
    """C-index of several runs side by side per model and fold, paired deltas with tests, one KM figure per run."""
    try:
        md = compare_runs(run_dirs, out_dir, model)
    except ModelError as e:
        fail(str(e))
    out.print(md.read_text(), highlight=False, markup=False, soft_wrap=True)
    out.print(f"wrote {md} and the KM figures beside it", highlight=False, markup=False, soft_wrap=True)


run_app = typer.Typer(no_args_is_help=True, help="Maintenance of run directories.", rich_markup_mode=None)
app.add_typer(run_app, name="run")


@run_app.command("upgrade")
def upgrade(run_dir: Path = typer.Argument(..., help="A run directory you trust (it is unpickled).")) -> None:
    """Re-save pickled CoxPH fold models (model.pkl, written by an older kemm) as plain JSON.

    Loading a pickle runs whatever code it names: run this only on a run directory you
    (or someone you trust) wrote. Every other command refuses model.pkl files.
    """
    try:
        written = upgrade_run(run_dir)
    except ModelError as e:
        fail(str(e))
    out.print(f"re-saved {len(written)} fold model(s) as JSON in {run_dir}", highlight=False)


@app.command()
def demo(
    work_dir: Path = typer.Option(Path("runs/demo"), "--work-dir", help="Where the cohort, knowledge cache and run go."),
    patients: int = typer.Option(300, "--patients", help="Synthetic patients."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs per fold."),
    seed: int = typer.Option(0, "--seed"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Offline end-to-end demo: synthetic cohort -> rules knowledge -> 5-fold CV of KEMM and baselines."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        res = run_demo(work_dir, n_patients=patients, epochs=epochs, seed=seed, progress=not quiet,
                       log=lambda m: out.print(m, highlight=False))
    except (KnowledgeError, ModelError) as e:
        fail(str(e))
    print_results(res.run_dir, title=f"kemm demo: 5-fold CV on {patients} synthetic patients")
    timing = ", ".join(f"{k} {v:.0f}s" for k, v in res.timings.items())
    out.print(f"run directory: {res.run_dir}   ({res.seconds:.0f}s: {timing})", highlight=False)


@app.command()
def benchmark(
    exp_dir: Path = typer.Argument(Path("experiments/tcga"), help="Folder of cohort configs + base.yaml."),
    data_root: Path = typer.Option(..., "--data-root", help="The raw data folder (shared/data/raw)."),
    out_dir: Path = typer.Option(None, "--out", help="Where RESULTS.md, results.csv, folds.csv and runs/ go (default: "
                                 "EXP_DIR; runs/benchmark when --set or --cohorts is given)."),
    cache_dir: Path = typer.Option(Path("knowledge_cache"), "--cache-dir", help="Knowledge cache for the real-report sources."),
    cohorts: str = typer.Option("", "--cohorts", help="Comma-separated subset, e.g. blca,luad."),
    override: list[str] = typer.Option([], "--set", help="Config override for every cohort, e.g. train.epochs=2 (repeatable)."),
    select: bool = typer.Option(False, "--select", help="Run the nested design choice on inner splits (SELECTION.md), not the benchmark."),
    stages: str = typer.Option("sources,runs,results", "--stages", help="Comma-separated subset of sources,runs,results."),
    profiles: str = typer.Option("", "--profiles", help="Train only these knowledge profiles (comma-separated; default all)."),
    rows: str = typer.Option("", "--rows", help="Train only these rows (model labels, comma-separated; default all); "
                             "results are written from every row that has finished folds. With --select: train only "
                             "these candidates, beside the inner results already in --out's selection_inner.csv."),
    carry: Optional[Path] = typer.Option(None, "--carry", help="An earlier run's folds.csv: its rows that have no run "
                                         "under --out are reported beside the new ones (rows named in the settings)."),
    executor: str = ExecutorOpt,
    address: Optional[str] = AddressOpt,
) -> None:
    """Real TCGA benchmark: knowledge from real reports; KEMM, ablations and baselines on the published splits."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    _check_executor(executor, address)
    try:
        out = run_benchmark(exp_dir, data_root, out_dir=out_dir, cache_dir=cache_dir,
                            cohorts=[c for c in cohorts.split(",") if c] or None, overrides=override,
                            select=select, stages=tuple(x for x in stages.split(",") if x),
                            profiles=[p for p in profiles.split(",") if p] or None,
                            rows=[r for r in rows.split(",") if r] or None,
                            command=shlex.join(["kemm", *sys.argv[1:]]), executor=executor, address=address,
                            carry=carry)
    except (BenchmarkError, KnowledgeError, ModelError) as e:
        fail(str(e))
    typer.echo(f"results: {out / ('SELECTION.md' if select else 'RESULTS.md')}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
