"""``kemm-knowledge derive``: derived sources (field sentences, PBK grounded in the patient, the
report's own sentences)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from kemm.knowledge.cli.common import CacheDirOpt, app, cache_dir_or_default, console, fail, out
from kemm.knowledge.errors import KnowledgeError
from kemm.knowledge.api import report_inputs
from kemm.knowledge.generate.derive import DeriveSummary, derive_fields, derive_grounded_pbk, derive_report_sentences
from kemm.knowledge.store.inputs import DEFAULT_ID_COLUMN, DEFAULT_TEXT_COLUMN


@app.command()
def derive(
    kind: str = typer.Argument(..., help="fields | grounded-pbk | report-sentences"),
    parent: Optional[str] = typer.Argument(None, help="fields: the refined-report source to derive from."),
    source: str = typer.Option(..., "--source", help="Name of the derived source to write."),
    reports: Optional[str] = typer.Option(None, "--reports", help="grounded-pbk: the refined-report source."),
    pbk: Optional[str] = typer.Option(None, "--pbk", help="grounded-pbk: the PBK source."),
    cancer_type: Optional[str] = typer.Option(
        None, "--cancer-type", help="grounded-pbk: cancer type of every case (default: from the report file name)."
    ),
    report_file: list[Path] = typer.Option([], "--report-file", help="report-sentences: report CSV/JSONL (repeatable)."),
    id_column: str = typer.Option(DEFAULT_ID_COLUMN, "--id-column", help="report-sentences: column with the patient id."),
    text_column: str = typer.Option(DEFAULT_TEXT_COLUMN, "--text-column", help="report-sentences: column with the report text."),
    cache_dir: Optional[Path] = CacheDirOpt,
) -> None:
    """Write a derived source: field sentences, PBK grounded in each patient, or the report's own
    diagnostic sentences (no LLM; resumable)."""
    cdir = cache_dir_or_default(cache_dir)
    try:
        s = _derive(kind, cdir, parent, source, reports, pbk, cancer_type, (report_file, id_column, text_column))
    except (KnowledgeError, ValueError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"I/O error: {e}", 1)
    _print(kind, source, s)


def _derive(kind: str, cdir: Path, parent: str | None, source: str, reports: str | None, pbk: str | None,
            cancer_type: str | None, report_files: tuple[list[Path], str, str]) -> DeriveSummary:
    if kind == "report-sentences":
        files, id_column, text_column = report_files
        if not files:
            fail("derive report-sentences needs --report-file FILE (CSV or JSONL, repeatable)")
        return derive_report_sentences(cdir, report_inputs(files, id_column, text_column), source)
    if kind == "fields":
        if not parent:
            fail("derive fields needs the refined-report source: kemm-knowledge derive fields PARENT --source NAME")
        return derive_fields(cdir, parent, source)
    if kind == "grounded-pbk":
        if not reports or not pbk:
            fail("derive grounded-pbk needs --reports SOURCE and --pbk SOURCE")
        return derive_grounded_pbk(cdir, reports, pbk, source, cancer_type)
    fail(f"unknown derived kind {kind!r}; kinds: fields, grounded-pbk, report-sentences")
    raise AssertionError  # fail() exits


def _print(kind: str, source: str, s: DeriveSummary) -> None:
    t = Table(title=f"kemm-knowledge derive {kind} → {source}")
    for col in ("cases", "ok", "skipped", "cached", "written"):
        t.add_column(col, justify="right")
    t.add_row(str(s.total), str(s.ok), str(s.skipped), str(s.cached), str(s.written))
    out.print(t)
    for reason, n in sorted(s.skip_reasons.items(), key=lambda x: -x[1]):
        console.print(f"skipped {n}: {reason}", highlight=False)
