"""``kemm-knowledge embed``: encode every statement of a source (incremental)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from kemm.knowledge.embed.embed import embed_source
from kemm.knowledge.embed.encoder import load_encoder
from kemm.knowledge.errors import EmbeddingError
from kemm.knowledge.store.cache import CacheError, SourceCache
from kemm.knowledge.cli.common import CacheDirOpt, app, cache_dir_or_default, console, fail, out
from kemm.knowledge.embed.catalog import catalog_status


@app.command()
def embed(
    source: str = typer.Argument(..., help="Knowledge source to embed."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Encoder id (see `kemm-knowledge encoders`; default all-MiniLM-L6-v2) or a local sentence-transformers model folder."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    device: Optional[str] = typer.Option(None, "--device", help="cpu (default) | cuda"),
    rebuild: bool = typer.Option(False, "--rebuild", help="Re-encode everything (also after the encoder's weights changed)."),
    cache_dir: Optional[Path] = CacheDirOpt,
) -> None:
    """Encode every statement of a source's ok records (incremental)."""
    try:
        SourceCache(cache_dir_or_default(cache_dir), source).read_manifest()  # before loading any encoder (seconds)
        enc = load_encoder(encoder, device=device)
        s = embed_source(cache_dir_or_default(cache_dir), source, enc, batch_size=batch_size, progress=True, rebuild=rebuild)
    except (CacheError, EmbeddingError) as e:
        fail(str(e))
    except OSError as e:  # disk full, read-only cache ...: records are untouched; the set is repaired on rerun
        fail(f"I/O error while embedding {source!r}: {e}; the source's records are untouched and readers refuse a "
             f"half-written set: fix the cause (e.g. free disk space) and rerun `kemm-knowledge embed {source}`", 1)
    t = Table(title=f"kemm-knowledge embed {source} ({s.encoder_id})")
    for col in ("records", "statements", "encoded", "reused", "not ok (skipped)", "elapsed"):
        t.add_column(col, justify="right")
    t.add_row(str(s.n_records), str(s.n_statements), str(s.n_encoded), str(s.n_reused), str(s.n_skipped_records),
              f"{s.elapsed_s:.1f} s")
    out.print(t)
    console.print(f"wrote {escape(str(s.path))}", highlight=False, soft_wrap=True)


@app.command("encoders")
def encoders_() -> None:
    """List the named encoders for `embed --encoder NAME`, installed or not."""
    t = Table(title="sentence encoders (`kemm-knowledge embed SOURCE --encoder NAME`)")
    for col in ("name", "dim", "installed", "install", "about"):
        t.add_column(col)
    for r in catalog_status():
        state = ("yes" if r.ready else "yes (unpacked on first use)") if r.installed else "no"
        t.add_row(r.name, str(r.dim), state, escape(r.install), r.about)
    out.print(t)
