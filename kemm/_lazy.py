"""Lazy public APIs (PEP 562): a package's names resolved from their modules on first use.

``kemm.knowledge`` and ``kemm.model`` export their public names through :func:`lazy_module`, so
``import kemm.model`` is cheap and loads no submodule (and no knowledge-half module) until a
name is used. Imports: the standard library only.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_module(package: str, exports: dict[str, str], namespace: dict[str, Any]
                ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` exporting ``{name: defining module}``.

    A resolved name is cached in ``namespace`` (the package's globals), so later look-ups skip
    ``__getattr__``.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
