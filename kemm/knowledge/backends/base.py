"""The backend protocol shared by every generator (rules, transformers, vLLM, OpenAI).

A backend turns a batch of rendered chat prompts into raw texts.  It never
validates: the repair loop (``kemm.knowledge.repair``) parses, validates and
asks again with the validation error appended.
"""
from __future__ import annotations

from kemm.knowledge.errors import KnowledgeError

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from pydantic import BaseModel

Messages = list[dict[str, str]]


@dataclass
class GenerationRequest:
    """One prompt to run.

    Attributes:
        messages: chat messages (system, user[, assistant, user ...] on retries).
        inputs: the task's raw input variables (case_id, report_text, cancer_type ...).
            Backends that do not call an LLM (``rules``) read these instead of ``messages``.
    """

    messages: Messages
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationResult:
    text: str
    finish_reason: str = "stop"  # "stop" | "length" | "error" | ...
    latency_s: float = 0.0
    error: str | None = None  # transport error (timeout, 5xx after retries); text may be ""
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """``generate(requests, schema, sampling) -> results``, one result per request, same order."""

    name: str

    def generate(
        self,
        requests: list[GenerationRequest],
        schema: type[BaseModel],
        sampling: dict[str, Any],
    ) -> list[GenerationResult]: ...

    def describe(self) -> dict[str, Any]:
        """Provenance for the manifest: model id, revision, device, dtype, library versions,
        effective sampling parameters. Must never contain secrets (API keys)."""
        ...

    def close(self) -> None: ...


class BackendError(KnowledgeError, RuntimeError):
    """A backend cannot be created or used (missing model, missing extra, bad option)."""


_REGISTRY: dict[str, Callable[..., Backend]] = {}


def register(name: str):
    def deco(factory: Callable[..., Backend]):
        _REGISTRY[name] = factory
        return factory

    return deco


def known_backends() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def create_backend(name: str, **options: Any) -> Backend:
    """Instantiate a backend by registry name; unknown names list the known ones."""
    _load_builtin()
    if name not in _REGISTRY:
        raise BackendError(f"unknown backend {name!r}; known backends: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**options)


def _load_builtin() -> None:
    # Import for the registration side effect; each module must import its heavy
    # dependencies lazily (inside the factory) so that `rules` works without them.
    import importlib

    for mod in ("rules", "transformers_backend", "vllm_backend", "openai_backend"):
        try:
            importlib.import_module(f"kemm.knowledge.backends.{mod}")
        except ModuleNotFoundError as e:
            if not e.name or not e.name.startswith("kemm.knowledge.backends"):
                raise
