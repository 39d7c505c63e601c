"""``--executor ray``: N engine replicas as Ray actors behind the one backend protocol.

Each replica is a Ray actor holding one backend engine (``create_backend(name, **options)``,
loaded once: a vLLM or transformers model, the rules extractor); :class:`RayReplicas` sends a
batch of rendered prompts to a free replica and returns its raw texts. Everything else stays in
the driver, unchanged: the prompt rendering, validation and repair (``repair.generate_validated``)
and the cache append (``build``), so a Ray build writes the same records, manifest and resume
state as a serial build (a rebuild of an unchanged source generates nothing). ``build`` keeps
one batch in flight per replica (``parallel_batches``) and appends them in input order.

Replicas are plain Ray actors rather than a Ray Data pipeline: the repair loop feeds a record's
own validation error back to the engine, which needs the driver between attempts, and the cache
is appended batch by batch as results come back (an interrupted build loses at most the batches
in flight). Within a replica, a local backend still cuts its batch by token budget
(``batching.token_budget_batches``).

Imports: ``kemm._ray`` (ray lazily), ``backends.base`` and ``backends.registry``.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from kemm._ray import session, task_error_cause
from kemm.knowledge.generate.backends.base import Backend, BackendError, GenerationRequest, GenerationResult
from kemm.knowledge.generate.backends.registry import create_backend


class EngineReplica:
    """The actor: one backend engine. An error while loading it is kept and raised by ``ready``
    (the original exception, not Ray's actor-death message)."""

    def __init__(self, name: str, options: dict[str, Any], factory: Callable[[], Backend] | None = None) -> None:
        self.backend: Backend | None = None
        self.error: Exception | None = None
        try:
            self.backend = factory() if factory is not None else create_backend(name, **options)
        except Exception as e:  # surfaced by ready(), on the driver, as the serial build would raise it
            self.error = e

    def ready(self) -> tuple[str, dict[str, Any], bool]:
        """The backend's name, its ``describe()``, and whether it reports throughput."""
        if self.error is not None:
            raise self.error
        return self.backend.name, self.backend.describe(), hasattr(self.backend, "throughput_stats")

    def generate(self, requests: list[GenerationRequest], schema: type[BaseModel],
                 sampling: dict[str, Any]) -> list[GenerationResult]:
        return self.backend.generate(requests, schema, sampling)

    def throughput_stats(self) -> dict[str, Any] | None:
        return self.backend.throughput_stats() if hasattr(self.backend, "throughput_stats") else None

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()


def replica_resources(name: str, options: dict[str, Any], gpus: float | None = None) -> dict[str, float]:
    """Ray resources of one replica: a CPU (or its ``threads``), and the GPUs its engine uses
    (vllm: ``tensor_parallel_size``; transformers on ``cuda``: one) unless ``gpus`` says otherwise."""
    if gpus is None:
        if name == "vllm":
            gpus = float(options.get("tensor_parallel_size") or 1)
        else:
            gpus = 1.0 if name == "transformers" and str(options.get("device") or "").startswith("cuda") else 0.0
    return {"num_cpus": float(options.get("threads") or 1), "num_gpus": float(gpus)}


class RayReplicas:
    """A backend whose ``generate`` runs on one of ``replicas`` engine actors.

    Args:
        name, options: the backend to load in every replica (``create_backend(name, **options)``).
        replicas: engine actors (each with ``replica_resources``).
        address: the Ray cluster (``kemm._ray.session``): None = a local one, "auto" = this node's.
        gpus_per_replica: override the GPUs requested per replica.
        factory: build the engine with this picklable callable instead (tests).
    """

    def __init__(self, name: str, options: dict[str, Any] | None = None, replicas: int = 1, address: str | None = None,
                 gpus_per_replica: float | None = None, factory: Callable[[], Backend] | None = None) -> None:
        if replicas < 1:
            raise BackendError(f"--replicas {replicas}: need at least 1")
        options = dict(options or {})
        self._session = session(address, BackendError)
        self.ray = self._session.__enter__()
        self.actors: list[Any] = []
        self._closed = False
        try:
            actor = self.ray.remote(**replica_resources(name, options, gpus_per_replica))(EngineReplica)
            self.actors = [actor.remote(name, options, factory) for _ in range(replicas)]
            ready = [self._get(a.ready.remote()) for a in self.actors]  # every engine loaded, or its error
        except BaseException:
            self.close()
            raise
        self.name, self._describe, has_throughput = ready[0]
        self.parallel_batches = replicas
        self._free: queue.Queue[Any] = queue.Queue()
        for a in self.actors:
            self._free.put(a)
        self._alive = len(self.actors)
        self._lock = threading.Lock()
        if has_throughput:  # only then, as build() records throughput where a backend reports it
            self.throughput_stats = self._throughput_stats

    def _get(self, ref: Any) -> Any:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            cause = task_error_cause(self.ray, e)
            if cause is not e:
                raise cause from None
            raise

    def generate(self, requests: list[GenerationRequest], schema: type[BaseModel],
                 sampling: dict[str, Any]) -> list[GenerationResult]:
        """One batch on the next free replica (thread-safe: ``build`` calls it from one thread per replica)."""
        actor = self._take()
        dead = False
        try:
            return self._get(actor.generate.remote(requests, schema, sampling))
        except self.ray.exceptions.RayActorError:
            dead = True  # the repair loop records this batch as failed; a rebuild retries it
            with self._lock:
                self._alive -= 1
            raise
        finally:
            if not dead:
                self._free.put(actor)

    def _take(self) -> Any:
        while True:
            try:
                return self._free.get(timeout=1.0)
            except queue.Empty:
                if self._alive == 0:
                    raise BackendError("every Ray engine replica died; run the build again to resume") from None

    def describe(self) -> dict[str, Any]:
        return self._describe

    def _throughput_stats(self) -> dict[str, Any]:
        """Each replica's own token counts and rates (``batching.Throughput.as_dict``)."""
        stats = []
        for a in self.actors:
            try:
                stats.append(self.ray.get(a.throughput_stats.remote()))
            except self.ray.exceptions.RayError:  # a replica that died reports nothing
                stats.append(None)
        return {"replicas": stats}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for a in self.actors:
            try:
                self.ray.get(a.close.remote())
            except Exception:  # a dead replica has nothing left to close
                pass
            self.ray.kill(a)
        self.actors = []
        self._session.__exit__(None, None, None)
