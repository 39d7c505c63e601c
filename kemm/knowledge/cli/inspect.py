"""``kemm-knowledge ls | show``: list the sources of a cache, show a manifest or one record."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from kemm.knowledge.store.cache import CacheError, SourceCache, list_sources
from kemm.knowledge.cli.common import CacheDirOpt, app, cache_dir_or_default, console, fail, out


COLUMNS = ("source", "task", "backend", "model", "prompt", "ok", "failed", "skipped", "updated")


@app.command("ls")
def ls_(cache_dir: Optional[Path] = CacheDirOpt) -> None:
    """List the knowledge sources in the cache (one block per source when the terminal is narrow)."""
    cdir = cache_dir_or_default(cache_dir)
    sources = list_sources(cdir)
    try:
        _ls_rows(cdir, [_row(m) for m in sources])
    finally:
        for m in sources:  # after the listing, so a long table does not scroll them away
            if m.get("identity_problem"):
                console.print(f"warning: source {escape(str(m.get('source')))}: {escape(m['identity_problem'])}",
                              highlight=False, soft_wrap=True)


def _ls_rows(cdir: Path, rows: list[tuple[str, ...]]) -> None:
    if not rows:
        console.print(f"no knowledge sources in {cdir}", highlight=False, soft_wrap=True)
        return
    # a table row needs each cell in full plus 3 characters of border and padding per column
    width = sum(max(len(c), *(len(r[i]) for r in rows)) + 3 for i, c in enumerate(COLUMNS)) + 1
    if width <= out.width:
        t = Table(title=f"knowledge sources in {cdir}")
        for col in COLUMNS:
            t.add_column(col, no_wrap=True)
        for r in rows:
            t.add_row(*(escape(x) for x in r))
        out.print(t)
        return
    # narrow terminal: names and paths are never cut, the other fields go on an indented line
    out.print(f"knowledge sources in {cdir}", highlight=False, soft_wrap=True)
    for source, task, backend, model, prompt, ok, failed, skipped, updated in rows:
        out.print(escape(source), highlight=False, soft_wrap=True)
        out.print(escape(f"  {task}, {backend}, prompt {prompt}; ok {ok}, failed {failed}, skipped {skipped}"),
                  highlight=False, soft_wrap=True)
        out.print(escape(f"  model {model}; updated {updated}"), highlight=False, soft_wrap=True)


def prompt_label(ident: dict) -> str:
    """How a source's prompt reads in ``ls``: ``v1 b2c99c1a`` (a prompt file), ``fields-v1 cf37b0e1`` (a
    derivation), ``imported (tcga-path-report)`` (outputs an LLM wrote elsewhere)."""
    version, sha = ident.get("prompt_version"), str(ident.get("prompt_sha") or "")
    if sha.startswith("import:"):
        return f"imported ({sha.split(':', 1)[1]})"
    if version is None:
        return sha[:8] or "-"
    return f"{'v' if isinstance(version, int) else ''}{version} {sha[:8]}".strip()


def _row(m: dict) -> tuple[str, ...]:
    ident, c = m.get("identity", {}), m.get("counts", {})
    return (
        str(m.get("source", "?")) + (" (MANIFEST MISMATCH)" if m.get("identity_problem") else ""),
        str(ident.get("task")), str(ident.get("backend")), str(ident.get("model_id")),
        prompt_label(ident), str(c.get("ok", "")), str(c.get("failed", "")), str(c.get("skipped", "")),
        str(m.get("updated", ""))[:19],
    )


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
        problem = sc.identity_problem()
        if problem:
            fail(problem)
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
