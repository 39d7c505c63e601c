"""``kemm-knowledge``: the knowledge half's command line (entry point ``kemm.knowledge.cli:app``).

One module per command group, each registering its commands on the shared ``app`` of
``common``: ``build``; ``inspect`` (ls, show); ``embed``; ``review`` (audit, diff);
``importing`` (import); ``derive`` (derived sources); ``models`` (packaged LLMs). They are
imported here in the order ``--help`` lists them.

May import every room of the knowledge half; never ``kemm.model``.
"""
from __future__ import annotations

# Registration order = the order ``--help`` lists the commands; keep these lines in this order.
from kemm.knowledge.cli import build  # isort: skip
from kemm.knowledge.cli import inspect  # isort: skip
from kemm.knowledge.cli import embed  # isort: skip
from kemm.knowledge.cli import review  # isort: skip
from kemm.knowledge.cli import importing  # isort: skip
from kemm.knowledge.cli import derive  # isort: skip
from kemm.knowledge.cli import models  # isort: skip
from kemm.knowledge.cli.common import app

COMMAND_MODULES = (build, inspect, embed, review, importing, derive, models)  # imported for their @app.command registrations

__all__ = ["app"]
