"""``kemm-knowledge import``: published LLM outputs as a knowledge source with provenance."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from kemm.knowledge.store.cache import CacheError
from kemm.knowledge.store.importers import ImportFormatError, import_file
from kemm.knowledge.store.inputs import InputError
from kemm.knowledge.cli.common import CacheDirOpt, app, cache_dir_or_default, console, fail, out, pct


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="File of outputs another LLM produced."),
    fmt: str = typer.Option(..., "--format", help="tcga-path-report | jsonl"),
    source: str = typer.Option(..., "--source", help="Name of the knowledge source to write."),
    model_name: str = typer.Option("unknown (as published)", "--model-name", help="The model that produced the outputs, as declared."),
    id_column: str = typer.Option("pdf_file_name_path", "--id-column", help="tcga-path-report: patient id column (first 12 chars)."),
    text_column: str = typer.Option("ocr_text", "--text-column", help="tcga-path-report: source report column (for the audit)."),
    llm_column: str = typer.Option("llm_output", "--llm-column", help="tcga-path-report: column with the LLM output."),
    text_key: str = typer.Option("report_text", "--text-key", help="jsonl: key holding the source report text, if any."),
    cache_dir: Optional[Path] = CacheDirOpt,
) -> None:
    """Import published LLM outputs as a source with provenance (failures recorded, never dropped)."""
    try:
        s = import_file(file, fmt, source, cache_dir_or_default(cache_dir), model_name=model_name, id_column=id_column,
                        text_column=text_column, llm_column=llm_column, text_key=text_key)
    except (ImportFormatError, CacheError, InputError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"I/O error: {e}", 1)
    t = Table(title=f"kemm-knowledge import {file.name} → {source} ({fmt})")
    for col in ("rows", "cases", "ok", "failed", "parse rate", "written", "unchanged", "cases with several rows"):
        t.add_column(col, justify="right")
    t.add_row(str(s.rows), str(s.cases), str(s.ok), str(s.failed), pct(s.parse_rate), str(s.written),
              str(s.unchanged), str(s.patients_with_several_rows))
    out.print(t)
    console.print(f"import sha256 {s.file_sha256[:16]}…, model declared as {model_name!r}")
    if s.failures:
        console.print(f"[yellow]{len(s.failures)} failure(s) recorded[/] (e.g. {', '.join(s.failures[:5])})")
