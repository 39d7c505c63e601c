"""Backends by name: ``create_backend("rules")``, ``known_backends()``.

Importing this module imports every built-in backend module, whose ``@register``
decorators fill the table in ``base``; each backend imports its heavy library
(torch, transformers, vllm, langchain) only when an instance is created, so
``rules`` works without them.
"""
from __future__ import annotations

from typing import Any

from kemm.knowledge.generate.backends import openai, rules, transformers, vllm
from kemm.knowledge.generate.backends.base import _REGISTRY, Backend, BackendError

BUILTIN = (openai, rules, transformers, vllm)  # imported for their registrations


def known_backends() -> list[str]:
    return sorted(_REGISTRY)


def create_backend(name: str, **options: Any) -> Backend:
    """Instantiate a backend by registry name; unknown names list the known ones."""
    if name not in _REGISTRY:
        raise BackendError(f"unknown backend {name!r}; known backends: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**options)
