"""``transformers`` backend: any local chat checkpoint, CPU or GPU, schema-constrained.

One batched ``model.generate`` per call (left padding), the tokenizer's chat
template, and xgrammar's transformers logits processor so that every token
keeps the output inside the task's JSON schema (see ``grammar.py`` for what
the decoder schema tightens).  Keys and values go into a cache reserved once
per call (``kv_cache.py``; ``kv_cache="dynamic"`` keeps transformers' own,
which copies itself at every step); on a CPU each prompt of a batch is
prefilled alone and only the decoding is batched (``prefill="rows"``).  The
checkpoint is read from a local directory only (``local_files_only=True``): no
hub access, ever.

Sampling: kemm's sampling dict defines the generation completely; knobs it
does not set take neutral values (no top-k, no repetition penalty), not the
checkpoint's ``generation_config.json`` defaults, so a result depends on the
recorded parameters only.  ``temperature == 0`` means greedy decoding.
"""
from __future__ import annotations

import json
import time
from typing import Any

from jinja2 import TemplateError
from pydantic import BaseModel

from kemm.knowledge.generate import catalog
from kemm.knowledge.generate.backends.base import BackendError, GenerationRequest, GenerationResult, register
from kemm.knowledge.generate.backends.grammar import compile_xgrammar
from kemm.knowledge.generate.backends.kv_cache import cache_kwarg, prefill_rows, reserved_cache
from kemm.knowledge.generate.backends.options import check_options, check_sampling, checkpoint_dir, checkpoint_revision, lib_version
from kemm.knowledge.generate.batching import (
    FirstStepClock,
    Throughput,
    cpu_threads,
    default_token_budget,
    token_budget_batches,
)


RESERVE_NEW_TOKENS = 512  # new tokens a batch's KV cache is first reserved for (kv_cache.py)


class TransformersBackend:
    name = "transformers"

    def __init__(
        self,
        model: str | None = None,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        threads: int | None = None,
        token_budget: int | None = None,
        max_batch_rows: int | None = None,
        kv_cache: str = "reserved",
        prefill: str | None = None,
    ) -> None:
        import torch  # lazy: heavy; only when a local model runs
        from transformers import AutoModelForCausalLM, AutoTokenizer  # lazy: heavy

        self.path = checkpoint_dir(model, self.name)
        self.revision = revision or checkpoint_revision(self.path)
        self.device = _resolve_device(device, torch)
        self.threads = _set_threads(threads, self.device, torch)
        gpu = self.device.startswith("cuda")
        if kv_cache not in ("reserved", "dynamic"):
            raise BackendError(f"kv_cache {kv_cache!r}: expected 'reserved' (default) or 'dynamic'")
        self.kv_cache = kv_cache
        if prefill not in (None, "rows", "batch") or (prefill == "rows" and kv_cache != "reserved"):
            raise BackendError(f"prefill {prefill!r}: expected 'rows' (CPU default, with kv_cache 'reserved') or 'batch'")
        # A padded batch prefills slower than its rows on a CPU (kv_cache.prefill_rows); a GPU has the width.
        self.prefill = prefill or ("batch" if gpu or kv_cache != "reserved" else "rows")
        self.token_budget = int(token_budget or default_token_budget(gpu, self.prefill == "rows"))
        if self.token_budget < 1:
            raise BackendError(f"--token-budget {token_budget}: expected a positive number of tokens")
        self.max_batch_rows = max_batch_rows
        self.throughput = Throughput()
        torch_dtype = _resolve_dtype(dtype, self.device, torch)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True, padding_side="left")
            self.model = AutoModelForCausalLM.from_pretrained(self.path, local_files_only=True, dtype=torch_dtype)
        except (OSError, ValueError) as e:
            raise BackendError(f"cannot load the checkpoint in {self.path}: {e}") from e
        self.model.to(self.device).eval()
        if not getattr(self.tokenizer, "chat_template", None):
            raise BackendError(
                f"{self.path}: the tokenizer has no chat template; use an instruct/chat checkpoint "
                "(tokenizer_config.json 'chat_template' or chat_template.jinja)"
            )
        self.tokenizer.padding_side = "left"
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self.eos_ids[0]
        self._compiler: Any = None
        self._grammars: dict[str, Any] = {}
        self._merge_system = False

    # -- protocol -----------------------------------------------------------------

    def generate(
        self, requests: list[GenerationRequest], schema: type[BaseModel], sampling: dict[str, Any]
    ) -> list[GenerationResult]:
        if not requests:
            return []
        check_sampling(self.name, sampling)
        gen_kwargs = generation_kwargs(sampling, self.eos_ids, self.tokenizer.pad_token_id)
        ids = [
            self.tokenizer(self._chat_text(r.messages), add_special_tokens=False)["input_ids"] for r in requests
        ]
        grammar = self._grammar(schema)
        results: list[GenerationResult] = [None] * len(requests)  # type: ignore[list-item]
        # Length-sorted token-budget batches: short prompts are not padded to the longest one.
        for idx in token_budget_batches([len(x) for x in ids], self.token_budget, self.max_batch_rows):
            for i, res in zip(idx, self._generate_batch([ids[i] for i in idx], grammar, gen_kwargs, sampling)):
                results[i] = res
        return results

    def _generate_batch(
        self, ids: list[list[int]], grammar: Any, gen_kwargs: dict[str, Any], sampling: dict[str, Any]
    ) -> list[GenerationResult]:
        """One left-padded ``model.generate`` over token id lists ``[B][L_i]``."""
        import torch  # lazy: heavy; only when a local model runs
        from transformers import GenerationConfig, LogitsProcessorList  # lazy: heavy
        from xgrammar.contrib.hf import LogitsProcessor  # lazy: heavy (torch)

        enc = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(self.device)
        if sampling.get("seed") is not None:
            torch.manual_seed(int(sampling["seed"]))
        clock = FirstStepClock()
        cache = None
        if self.kv_cache == "reserved":
            # Room for RESERVE_NEW_TOKENS new tokens: schema-constrained outputs mostly stop well
            # before max_new_tokens, and a longer one doubles the buffer (amortised, same values).
            reserve = enc["input_ids"].shape[1] + min(int(gen_kwargs["max_new_tokens"]), RESERVE_NEW_TOKENS)
            if self.prefill == "rows" and len(ids) > 1:
                cache = prefill_rows(self.model, ids, reserve)
            if cache is None:
                cache = reserved_cache(self.model.config, reserve)
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                **({cache_kwarg(self.model): cache} if cache is not None else {}),
                generation_config=GenerationConfig(**gen_kwargs),
                # One processor per call: it holds per-row grammar matchers.
                logits_processor=LogitsProcessorList([clock, LogitsProcessor(grammar)]),
            )
        elapsed = time.perf_counter() - clock.start
        per_item = elapsed / len(ids)
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        results = []
        meta = {"generation_config": gen_kwargs, "batch_rows": len(ids)}
        n_out = 0
        for row, prompt_ids in zip(new, ids):
            stop = next((j for j, t in enumerate(row) if t in self.eos_ids), None)
            toks = row if stop is None else row[:stop]
            toks = [t for t in toks if t != self.tokenizer.pad_token_id]
            n_out += len(toks)
            results.append(
                GenerationResult(
                    text=self.tokenizer.decode(toks, skip_special_tokens=True),
                    finish_reason="stop" if stop is not None else "length",
                    latency_s=per_item,
                    meta={**meta, "prompt_tokens": len(prompt_ids), "completion_tokens": len(toks)},
                )
            )
        padded = len(ids) * enc["input_ids"].shape[1]
        self.throughput.add(sum(len(x) for x in ids), padded, n_out, clock.prefill_s(), elapsed, len(ids))
        return results

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.path.name,
            "model_revision": self.revision,
            "model_path": str(self.path),
            "packaged_model": catalog.provenance(self.path),
            "device": str(self.device),
            "threads": self.threads,
            "token_budget": self.token_budget,
            "kv_cache": self.kv_cache,
            "prefill": self.prefill,
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "constrained_decoding": "xgrammar (transformers logits processor, any_whitespace=False)",
            "sampling_rule": "kemm sampling defines generation; unset knobs neutral (top_k=0, repetition_penalty=1, "
            "not the checkpoint defaults); temperature 0 = greedy",
            "eos_token_ids": self.eos_ids,
            "checkpoint_generation_config": _jsonable(self.model.generation_config.to_diff_dict()),
            "libraries": {d: lib_version(d) for d in ("transformers", "torch", "xgrammar", "tokenizers")},
        }

    def throughput_stats(self) -> dict[str, Any]:
        """Prompt/output tokens and tokens/s of this backend's generate calls so far (for the manifest)."""
        return {"threads": self.threads, "token_budget": self.token_budget, **self.throughput.as_dict()}

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        self._grammars.clear()
        try:
            import torch  # lazy: heavy; only when a local model runs

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - best effort
            pass

    # -- helpers -----------------------------------------------------------------

    def _chat_text(self, messages: list[dict[str, str]]) -> str:
        msgs = _merge_system(messages) if self._merge_system else messages
        try:
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        except TemplateError:
            # Some templates (Gemma, Mistral v1) refuse a system role: fold it into the first user turn.
            if self._merge_system or messages[0]["role"] != "system":
                raise
            self._merge_system = True
            return self._chat_text(messages)

    def _grammar(self, schema: type[BaseModel]) -> Any:
        import xgrammar as xgr  # lazy: heavy (torch)


        key = f"{schema.__module__}.{schema.__qualname__}"
        if key not in self._grammars:
            if self._compiler is None:
                vocab = self.model.get_output_embeddings().weight.shape[0]
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=vocab, stop_token_ids=self.eos_ids)
                self._compiler = xgr.GrammarCompiler(info)
            self._grammars[key] = compile_xgrammar(self._compiler, schema)
        return self._grammars[key]


def generation_kwargs(sampling: dict[str, Any], eos_ids: list[int], pad_id: int | None) -> dict[str, Any]:
    """kemm sampling → a complete ``GenerationConfig`` (every sampling knob explicit)."""
    temperature = float(sampling.get("temperature", 0.0) or 0.0)
    do_sample = temperature > 0
    kw: dict[str, Any] = {
        "max_new_tokens": int(sampling.get("max_tokens", 1024)),
        "do_sample": do_sample,
        "num_beams": 1,
        "repetition_penalty": float(sampling.get("repetition_penalty", 1.0)),
        "eos_token_id": list(eos_ids),
        "pad_token_id": pad_id,
    }
    if do_sample:
        kw.update(
            temperature=temperature,
            top_p=float(sampling.get("top_p", 1.0)),
            top_k=int(sampling.get("top_k", 0) or 0),
        )
        if sampling.get("min_p") is not None:
            kw["min_p"] = float(sampling["min_p"])
    # Greedy needs no warpers (temperature/top-p/top-k apply to sampling only).
    return kw


def _resolve_device(device: str | None, torch: Any) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"--device {device}: CUDA is not available here; use --device cpu")
    return device


def _set_threads(threads: int | None, device: str, torch: Any) -> int | None:
    """torch intra-op threads for a CPU run (see ``batching.cpu_threads``); None on a GPU."""
    if device.startswith("cuda"):
        return None
    try:
        n = cpu_threads(threads)
    except ValueError as e:
        raise BackendError(f"--threads: {e}") from e
    torch.set_num_threads(n)
    return n


def _resolve_dtype(dtype: str | None, device: str, torch: Any) -> Any:
    if dtype == "auto":
        return "auto"  # the checkpoint's own dtype
    if dtype is None:
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise BackendError(f"--dtype {dtype!r}: expected one of {sorted(table) + ['auto']}")
    return table[dtype]


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    for src in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
        if src is None:
            continue
        for i in src if isinstance(src, (list, tuple)) else [src]:
            if i not in ids:
                ids.append(int(i))
    if not ids:
        raise BackendError("the checkpoint defines no eos token (generation_config.json or tokenizer)")
    return ids


def _merge_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    if not messages or messages[0]["role"] != "system" or len(messages) < 2:
        return messages
    first = {"role": messages[1]["role"], "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}
    return [first] + list(messages[2:])


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


@register("transformers")
def create(**options: Any) -> TransformersBackend:
    check_options(
        "transformers", options, ("model", "revision", "device", "dtype", "threads", "token_budget"), ("max_batch_rows", "kv_cache", "prefill")
    )
    return TransformersBackend(**options)
