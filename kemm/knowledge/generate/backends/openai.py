"""``openai`` backend: any OpenAI-compatible chat server (``vllm serve``, llama.cpp, ...).

Through langchain-openai: ``ChatOpenAI(base_url=..., model=...)``
``.with_structured_output(schema, method="json_schema", include_raw=True)``, so
the request carries ``response_format={"type": "json_schema", ...}`` and the
server decodes under the schema.  ``--json-mode`` switches to
``response_format={"type": "json_object"}`` for servers without json_schema
support; the JSON schema is then appended to the system message, since the
model would otherwise not know the field names.

The raw message text is returned, never langchain's parse: validation and the
repair loop are shared (``kemm.knowledge.generate.repair``).

Transport: ``--concurrency`` requests in flight (threads), a per-call
``--timeout``, and bounded retries with exponential backoff on connection
errors, 429 and 5xx.  A timeout is not retried here (a hung server usually
hangs again; the repair loop asks again up to ``--max-attempts`` times): it
becomes ``GenerationResult(error=...)``, a recorded failure, and the build goes
on.  The API key is read from an environment variable (``--api-key-env``,
default ``OPENAI_API_KEY``; a dummy key when unset, for local servers) and is
never put in the provenance or in error texts.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel

from kemm.knowledge.generate.backends.base import BackendError, GenerationRequest, GenerationResult, register
from kemm.knowledge.generate.backends.grammar import decoder_schema
from kemm.knowledge.generate.backends.options import check_options, check_sampling, lib_version

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DUMMY_API_KEY = "EMPTY"  # what `vllm serve` and llama.cpp accept when started without a key
OPENAI_SAMPLING = ("temperature", "top_p", "max_tokens", "seed")
EXTRA_SAMPLING = ("top_k", "min_p", "repetition_penalty")  # vLLM / llama.cpp extensions, sent in the body


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        revision: str | None = None,
        api_key_env: str | None = None,
        concurrency: int | None = None,
        timeout: float | None = None,
        json_mode: bool | None = None,
        max_retries: int = 2,
        backoff_s: float = 0.5,
    ) -> None:
        if not model:
            raise BackendError("the openai backend needs --model NAME, the model name the server serves")
        if not base_url:
            raise BackendError("the openai backend needs --base-url, e.g. http://127.0.0.1:8000/v1")
        if concurrency is not None and concurrency < 1:
            raise BackendError(f"--concurrency must be >= 1, got {concurrency}")
        if timeout is not None and timeout <= 0:
            raise BackendError(f"--timeout must be > 0 seconds, got {timeout}")
        try:
            import langchain_openai  # noqa: F401  # lazy: optional extra; checked at creation for a clear error
        except ImportError as e:
            raise BackendError(f"the openai backend needs langchain-openai: pip install 'kemm[openai]' ({e})") from e
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.revision = revision
        self.api_key_env = api_key_env or DEFAULT_API_KEY_ENV
        self.concurrency = int(concurrency or 4)
        self.timeout = float(timeout or 180.0)
        self.method = "json_mode" if json_mode else "json_schema"
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self._runnables: dict[str, Any] = {}

    # -- protocol -----------------------------------------------------------------

    def generate(
        self, requests: list[GenerationRequest], schema: type[BaseModel], sampling: dict[str, Any]
    ) -> list[GenerationResult]:
        if not requests:
            return []
        check_sampling(self.name, sampling, OPENAI_SAMPLING + EXTRA_SAMPLING)
        runnable = self._runnable(schema, sampling)
        convs = [self._messages(r.messages, schema) for r in requests]
        if self.concurrency == 1 or len(convs) == 1:
            return [self._call(runnable, c) for c in convs]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(convs))) as pool:
            return list(pool.map(lambda c: self._call(runnable, c), convs))

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.model,
            "model_revision": self.revision,
            "base_url": self.base_url,
            "structured_output": self.method,
            "api_key_env": self.api_key_env,  # the variable's name only, never its value
            "concurrency": self.concurrency,
            "timeout_s": self.timeout,
            "max_retries": self.max_retries,
            "sampling_rule": "temperature, top_p, max_tokens, seed as OpenAI parameters; top_k, min_p, "
            "repetition_penalty in the request body (vLLM/llama.cpp extensions); the rest at server defaults",
            "libraries": {d: lib_version(d) for d in ("langchain-openai", "openai")},
        }

    def close(self) -> None:
        self._runnables.clear()

    def preflight(self) -> None:
        """Stop before anything is written when the server cannot be reached at all (connection
        refused, unknown host, no answer): BackendError naming the URL. A server that answers, even
        with an HTTP error on ``/models`` (not every server lists models), passes."""
        import openai  # lazy: comes with the optional langchain-openai extra

        client = openai.OpenAI(base_url=self.base_url, api_key=os.environ.get(self.api_key_env) or "EMPTY",
                               timeout=min(self.timeout, 10.0), max_retries=0)
        try:
            client.models.list()
        except (openai.APIConnectionError, openai.APITimeoutError) as e:  # nothing answered at that address
            raise BackendError(
                f"--base-url {self.base_url}: cannot reach the OpenAI-compatible server ({_describe_error(e)}); "
                "is it running (e.g. `vllm serve MODEL --port 8000`) and is the URL right?"
            ) from None
        except openai.APIError:
            pass  # it answered (an HTTP error on /models is fine: not every server lists models)
        finally:
            client.close()

    # -- helpers -----------------------------------------------------------------

    def _runnable(self, schema: type[BaseModel], sampling: dict[str, Any]) -> Any:
        from langchain_openai import ChatOpenAI  # lazy: optional extra, heavy

        key = json.dumps([schema.__module__, schema.__qualname__, sampling], sort_keys=True, default=str)
        if key in self._runnables:
            return self._runnables[key]
        extra = {k: sampling[k] for k in EXTRA_SAMPLING if sampling.get(k) is not None}
        llm = ChatOpenAI(
            model=self.model,
            base_url=self.base_url,
            api_key=os.environ.get(self.api_key_env) or DUMMY_API_KEY,
            timeout=self.timeout,
            max_retries=0,  # retries are ours: bounded, with backoff, never on timeouts
            temperature=float(sampling.get("temperature", 0.0) or 0.0),
            top_p=sampling.get("top_p"),
            max_tokens=sampling.get("max_tokens"),
            seed=sampling.get("seed"),
            extra_body=extra or None,
        )
        if self.method == "json_schema":
            fmt: Any = {"name": schema.__name__, "schema": decoder_schema(schema), "strict": False}
            runnable = llm.with_structured_output(fmt, method="json_schema", include_raw=True)
        else:
            runnable = llm.with_structured_output(method="json_mode", include_raw=True)
        self._runnables[key] = runnable
        return runnable

    def _messages(self, messages: list[dict[str, str]], schema: type[BaseModel]) -> list[dict[str, str]]:
        if self.method != "json_mode":
            return list(messages)
        note = "Answer with a JSON object that validates against this JSON schema:\n" + json.dumps(
            decoder_schema(schema)
        )
        if messages and messages[0]["role"] == "system":
            return [{"role": "system", "content": messages[0]["content"] + "\n\n" + note}] + list(messages[1:])
        return [{"role": "system", "content": note}] + list(messages)

    def _call(self, runnable: Any, messages: list[dict[str, str]]) -> GenerationResult:
        import openai  # lazy: comes with the optional langchain-openai extra

        t0 = time.perf_counter()
        tries = 0
        while True:
            tries += 1
            try:
                out = runnable.invoke(messages)
            except openai.LengthFinishReasonError as e:  # truncated: keep the text for the record
                msg = e.completion.choices[0].message if e.completion.choices else None
                return self._result(getattr(msg, "content", "") or "", "length", t0, tries)
            except openai.APITimeoutError:
                return self._error(f"timeout after {self.timeout:g} s (no answer from {self.base_url})", t0, tries)
            except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as e:
                if tries > self.max_retries:
                    return self._error(f"{_describe_error(e)} (after {tries} tries)", t0, tries)
                time.sleep(min(self.backoff_s * 2 ** (tries - 1), 30.0))
                continue
            except openai.APIStatusError as e:  # 4xx: our request is wrong; asking again will not help
                return self._error(_describe_error(e), t0, tries)
            except Exception as e:  # noqa: BLE001 - one bad call never aborts the batch
                return self._error(f"{type(e).__name__}: {e}", t0, tries)
            raw = out.get("raw") if isinstance(out, dict) else out
            text = raw.content if isinstance(getattr(raw, "content", None), str) else _content_text(raw)
            finish = (getattr(raw, "response_metadata", None) or {}).get("finish_reason") or "stop"
            return self._result(text, str(finish), t0, tries)

    def _result(self, text: str, finish: str, t0: float, tries: int) -> GenerationResult:
        return GenerationResult(
            text=text, finish_reason=finish, latency_s=time.perf_counter() - t0, meta={"http_tries": tries}
        )

    def _error(self, msg: str, t0: float, tries: int) -> GenerationResult:
        return GenerationResult(
            text="", finish_reason="error", latency_s=time.perf_counter() - t0, error=msg, meta={"http_tries": tries}
        )


def _describe_error(e: Any) -> str:
    status = getattr(e, "status_code", None)
    head = f"HTTP {status}" if status else type(e).__name__
    return f"{head}: {getattr(e, 'message', None) or e}"


def _content_text(raw: Any) -> str:
    content = getattr(raw, "content", "")
    if isinstance(content, list):  # content blocks
        return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    return str(content or "")


@register("openai")
def create(**options: Any) -> OpenAIBackend:
    check_options(
        "openai",
        options,
        ("model", "base_url", "revision", "api_key_env", "concurrency", "timeout", "json_mode"),
        api_only=("max_retries", "backoff_s"),
    )
    return OpenAIBackend(**options)
