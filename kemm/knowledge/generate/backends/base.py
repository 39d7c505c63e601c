"""The backend protocol shared by every generator (rules, transformers, vLLM, OpenAI).

A backend turns a batch of rendered chat prompts into raw texts.  It never
validates: the repair loop (``kemm.knowledge.generate.repair``) parses, validates and
asks again with the validation error appended.  ``registry.create_backend`` builds one
by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from pydantic import BaseModel

from kemm.knowledge.errors import KnowledgeError

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


def register(name: str) -> Callable[[Callable[..., Backend]], Callable[..., Backend]]:
    """Class/function decorator: make ``factory`` creatable as ``create_backend(name, ...)``."""

    def deco(factory: Callable[..., Backend]) -> Callable[..., Backend]:
        _REGISTRY[name] = factory
        return factory

    return deco
