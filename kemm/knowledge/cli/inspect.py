"""``kemm-knowledge ls | show``: list the sources of a cache, show a manifest or one record."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from kemm.knowledge.store.cache import CacheError, SourceCache, list_sources
from kemm.knowledge.cli.common import CacheDirOpt, app, cache_dir_or_default, console, fail, out


@app.command("ls")
def ls_(cache_dir: Optional[Path] = CacheDirOpt) -> None:
    """List the knowledge sources in the cache."""
    cdir = cache_dir_or_default(cache_dir)
    rows = list_sources(cdir)
    if not rows:
        console.print(f"no knowledge sources in {cdir}")
        return
    t = Table(title=f"knowledge sources in {cdir}")
    for col in ("source", "task", "backend", "model", "prompt", "ok", "failed", "skipped", "updated"):
        t.add_column(col)
    for m in rows:
        ident = m.get("identity", {})
        c = m.get("counts", {})
        t.add_row(
            m.get("source", "?"), str(ident.get("task")), str(ident.get("backend")), str(ident.get("model_id")),
            f"v{ident.get('prompt_version')} {str(ident.get('prompt_sha'))[:8]}",
            str(c.get("ok", "")), str(c.get("failed", "")), str(c.get("skipped", "")), str(m.get("updated", "")),
        )
    out.print(t)


@app.command()
def show(
    source: str = typer.Argument(...),
    case_id: Optional[str] = typer.Argument(None, help="Case id (or cancer type for pbk); omit for the manifest."),
    raw: bool = typer.Option(False, "--raw", help="Also print the raw model output."),
    cache_dir: Optional[Path] = CacheDirOpt,
) -> None:
    """Show a source's manifest, or one record."""
    try:
        sc = SourceCache(cache_dir_or_default(cache_dir), source)
        man = sc.read_manifest()
        if case_id is None:
            out.print_json(json.dumps(man, default=str))
            return
        rec = sc.by_case().get(case_id)
    except CacheError as e:
        fail(str(e))
    if rec is None:
        fail(f"no record for case {case_id!r} in source {source!r}")
    shown = {k: v for k, v in rec.to_json().items() if raw or k != "raw_output"}
    out.print_json(json.dumps(shown, default=str, ensure_ascii=False))
