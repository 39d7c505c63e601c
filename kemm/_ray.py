"""Connecting to Ray, for the executors of both halves (the training sweep, knowledge replicas).

The one module that imports ``ray`` (lazily: it is the optional ``kemm[ray]`` extra). A caller
passes its own error class, so a missing Ray or an unreachable cluster is a one-line error of
that half (``ModelError`` / ``KnowledgeError``), never a traceback.

``session(address)``: ``None`` starts a local cluster on this machine for the duration (or joins
the one ``$RAY_ADDRESS`` names); ``"auto"`` joins the cluster this node belongs to
(``ray start --head`` / ``ray start --address HEAD:6379``); ``"HOST:PORT"`` or ``ray://...`` names one.
Where Ray is already initialised (a test's local cluster, a notebook), that connection is used
and left open.

Imports: the standard library only (``ray`` lazily).
"""
from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

INSTALL_HINT = "pip install 'kemm[ray]'"


def import_ray(error: type[Exception]) -> Any:
    """The ``ray`` module, or ``error`` saying how to install it."""
    try:
        import ray  # lazy: optional dependency (kemm[ray]); the serial paths never need it
    except ImportError as e:
        raise error(f"--executor ray needs Ray, which is not importable here ({e}): {INSTALL_HINT}") from None
    return ray


@contextlib.contextmanager
def session(address: str | None, error: type[Exception]) -> Iterator[Any]:
    """Yield ``ray``, connected to the cluster at ``address`` (see the module docstring)."""
    ray = import_ray(error)
    started = False
    if not ray.is_initialized():
        unreachable = _unreachable(address)
        if unreachable:  # Ray itself retries an unreachable head for minutes
            raise error(f"--address {address}: no Ray head there ({unreachable}); start one with `ray start --head` "
                        "on that node, or pass --address auto on a node of the cluster")
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as e:
            where = f"--address {address}" if address else "a local Ray cluster"
            raise error(f"{where}: cannot connect ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        "start a cluster with `ray start --head` (and `ray start --address HEAD:6379` on the "
                        "other nodes), or leave out --address for a local one") from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _unreachable(address: str | None, timeout_s: float = 5.0) -> str | None:
    """Why ``HOST:PORT`` (or ``ray://HOST:PORT``) takes no connection; None when it does, or for None/auto."""
    if not address or address in ("auto", "local"):
        return None
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return None  # a form Ray itself will judge
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        return str(e) or type(e).__name__
    return None


def cluster_cpus(ray: Any) -> int:
    """CPUs of the connected cluster (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def task_error_cause(ray: Any, e: BaseException) -> BaseException:
    """The exception a Ray task raised (``e`` itself when it is not a task error)."""
    if isinstance(e, ray.exceptions.RayTaskError):
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return e
