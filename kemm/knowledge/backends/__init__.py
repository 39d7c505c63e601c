from kemm.knowledge.backends.base import (
    Backend,
    BackendError,
    GenerationRequest,
    GenerationResult,
    create_backend,
    known_backends,
    register,
)

__all__ = [
    "Backend",
    "BackendError",
    "GenerationRequest",
    "GenerationResult",
    "create_backend",
    "known_backends",
    "register",
]
