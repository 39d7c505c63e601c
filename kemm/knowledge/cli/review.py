"""``kemm-knowledge audit | diff``: check a source against its reports; compare two sources."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from kemm._io import atomic_write_json, atomic_write_text
from kemm.knowledge.review.audit import AuditError, AuditReport, audit_source, failed_thresholds, parse_thresholds
from kemm.knowledge.review.audit_html import render_audit_html
from kemm.knowledge.review.diff import DiffError, diff_sources, write_diff
from kemm.knowledge.store.cache import CacheError
from kemm.knowledge.store.inputs import InputError
from kemm.knowledge.cli.common import EXIT_BELOW_THRESHOLD, CacheDirOpt, app, cache_dir_or_default, console, fail, out, pct


@app.command()
def audit(
    source: str = typer.Argument(...),
    reports: list[Path] = typer.Option([], "--reports", help="Source report file(s) (CSV/JSONL); default: the files the records name."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write a self-contained HTML report here."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the audit as JSON here."),
    fail_under: list[str] = typer.Option([], "--fail-under", help="METRIC=VALUE (repeatable): exit 3 when below. Metrics: parse_rate, ok_rate, faithfulness, claim_support, verifiable."),
    id_column: str = typer.Option("pdf_file_name_path", "--id-column"),
    text_column: str = typer.Option("ocr_text", "--text-column"),
    max_records: int = typer.Option(300, "--max-records", min=0, help="Flagged records shown in the HTML."),
    cache_dir: Optional[Path] = CacheDirOpt,
) -> None:
    """Validity, faithfulness, coverage and duplicates of a source; HTML for reading, exit 3 for CI."""
    try:
        thresholds = parse_thresholds(fail_under)
        rep = audit_source(cache_dir_or_default(cache_dir), source, reports or None, id_column, text_column)
        if html:
            atomic_write_text(html, render_audit_html(rep, max_records=max_records))
        if json_out:
            atomic_write_json(json_out, rep.as_dict())
    except (AuditError, CacheError, InputError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"I/O error: {e}", 1)
    _print_audit(rep)
    if html:
        console.print(f"wrote {escape(str(html))}", highlight=False, soft_wrap=True)
    below = failed_thresholds(rep, thresholds)
    if below:
        for b in below:
            console.print(f"[bold red]below threshold:[/] {b}", highlight=False)
        raise typer.Exit(EXIT_BELOW_THRESHOLD)

@app.command()
def diff(
    a: str = typer.Argument(..., help="First refine_report source."),
    b: str = typer.Argument(..., help="Second refine_report source."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Also write the diff as .json or .md."),
    top: int = typer.Option(10, "--top", min=1, help="Disagreements listed."),
    cache_dir: Optional[Path] = CacheDirOpt,
) -> None:
    """Per-field agreement and Cohen's kappa of two sources over shared case ids."""
    try:
        d = diff_sources(cache_dir_or_default(cache_dir), a, b)
        if out_file:
            write_diff(d, out_file)
    except (CacheError, DiffError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"I/O error: {e}", 1)
    t = Table(title=f"{a} vs {b}: {d.shared} shared cases (only {a}: {d.only_a}, only {b}: {d.only_b}, not ok: {d.not_ok})")
    for col in ("field", "agreement", "kappa", "both reported", "agreement (both reported)"):
        t.add_column(col, justify="left" if col == "field" else "right")
    for f in d.fields:
        t.add_row(f.field, pct(f.agreement), "" if f.kappa is None else f"{f.kappa:.3f}", str(f.both_reported),
                  pct(f.agreement_both_reported))
    out.print(t)
    t2 = Table(title="most frequent disagreements")
    for col in ("field", a, b, "cases", "examples"):
        t2.add_column(col)
    for fld, va, vb, c, ex in d.top_disagreements(top):
        t2.add_row(fld, va[:50], vb[:50], str(c), ", ".join(ex))
    out.print(t2)
    if out_file:
        console.print(f"wrote {escape(str(out_file))}", highlight=False, soft_wrap=True)


def _print_audit(rep: AuditReport) -> None:
    v, m, f = rep.validity, rep.metrics, rep.faithfulness
    t = Table(title=f"kemm-knowledge audit {rep.source} ({rep.task})")
    t.add_column("check")
    t.add_column("result", justify="right")
    t.add_row("records ok / failed / skipped", f"{v.ok} / {v.failed} / {v.skipped}")
    t.add_row("parse rate", pct(m.get("parse_rate")))
    t.add_row("truncated", str(len(v.truncated)))
    t.add_row("attempts", ", ".join(f"{k}: {n}" for k, n in v.attempts.items()))
    sp = v.statements_per_record
    if sp.n:
        t.add_row("statements / record (mean, max)", f"{sp.mean}, {sp.max}")
    if f is not None:
        t.add_row("records checked / unverifiable", f"{f.checked_records} / {f.unverifiable_records}")
        t.add_row("faithful records", pct(f.faithfulness))
        t.add_row("claims supported", f"{pct(f.claim_support)} of {f.claims}")
        t.add_row("flagged records", str(f.records_with_unsupported))
        cp = f.copied_from_prompt
        if cp is not None and cp.rate is not None:
            t.add_row("records copying a prompt example", f"{cp.records} ({pct(cp.rate)})")
    if rep.coverage:
        worst = sorted(rep.coverage.items(), key=lambda kv: -kv[1])[:4]
        t.add_row("most 'not reported'", ", ".join(f"{k} {pct(x)}" for k, x in worst))
    t.add_row("records repeating a statement", str(rep.duplicates.records_with_repeated_statements))
    out.print(t)
    if f is not None and f.top_unsupported:
        out.print("most frequent unsupported: " + "; ".join(f"{k} ×{n}" for k, n in f.top_unsupported[:6]), highlight=False)
