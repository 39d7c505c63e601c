"""What every ``kemm-knowledge`` command shares: the Typer app, consoles, ``--cache-dir``, ``fail``.

Exit codes: 0 ok (also when some records failed: they are recorded), 2 usage or input
errors, 1 I/O or unexpected errors, 3 ``audit --fail-under`` found a metric below its
threshold.
"""
from __future__ import annotations

from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

from kemm import __version__
from kemm.knowledge.store.cache import default_cache_dir

# Plain (click) help: no `<bool>` after flags, and `[...]` in help texts is shown, not eaten as rich markup.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="kemm-knowledge: build, inspect, embed and audit knowledge sources.")
console = Console(stderr=True)
out = Console()
EXIT_BELOW_THRESHOLD = 3

CacheDirOpt = typer.Option(None, "--cache-dir", help="Knowledge cache folder [env KEMM_CACHE_DIR, default ./knowledge_cache].")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kemm-knowledge (kemm {__version__})")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the kemm version and exit.")) -> None:
    """kemm-knowledge: build, inspect, embed and audit knowledge sources."""


def cache_dir_or_default(cache_dir: Optional[Path]) -> Path:
    return cache_dir or default_cache_dir()


def fail(msg: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False)  # messages may hold [brackets]
    raise typer.Exit(code)


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"
