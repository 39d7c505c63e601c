"""``kemm-knowledge build``: run a knowledge task into a cached source."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from kemm.knowledge import api
from kemm.knowledge.generate.backends.base import BackendError
from kemm.knowledge.generate.build import BuildSummary
from kemm.knowledge.generate.prompts import Prompt, PromptError, default_version, load_prompt
from kemm.knowledge.generate.sectioning import apply_sectioning, resolve_version
from kemm.knowledge.store.cache import CacheError
from kemm.knowledge.store.inputs import DEFAULT_ID_COLUMN, DEFAULT_TEXT_COLUMN, InputError, TaskInput, cancer_type_inputs
from kemm.knowledge.cli.common import CacheDirOpt, app, cache_dir_or_default, console, fail, out


def _parse_sampling(items: list[str]) -> dict:
    out_: dict = {}
    for it in items:
        if "=" not in it:
            fail(f"--sampling {it!r}: expected KEY=VALUE, e.g. temperature=0.2")
        k, v = it.split("=", 1)
        try:
            out_[k] = json.loads(v)
        except json.JSONDecodeError:
            out_[k] = v
    return out_


ExecutorOpt = typer.Option("serial", "--executor", help="serial (default): the engine in this process; ray: --replicas "
                           "engine actors on a Ray cluster, this process validating and writing the cache.")
AddressOpt = typer.Option(None, "--address", help="With --executor ray: the Ray cluster, e.g. auto (this node's, after "
                          "`ray start`) or HOST:6379 [default: a local cluster for this command].")
ReplicasOpt = typer.Option(1, "--replicas", min=1, help="With --executor ray: engine replicas (one model each).")
GpusOpt = typer.Option(None, "--gpus-per-replica", min=0, help="With --executor ray: GPUs per replica [default: vllm "
                       "--tensor-parallel-size, transformers on cuda 1, else 0].")


@app.command()
def build(
    task: str = typer.Argument(..., help="refine_report | pbk"),
    source: str = typer.Option(..., "--source", help="Name of the knowledge source to write (a folder in the cache)."),
    reports: list[Path] = typer.Option([], "--reports", help="Report CSV/JSONL (repeatable) for refine_report."),
    cancer_types: str = typer.Option("", "--cancer-types", help="Comma-separated TCGA codes for pbk, e.g. BLCA,LUAD."),
    backend: str = typer.Option("rules", "--backend", help="rules | transformers | vllm | openai"),
    model: Optional[str] = typer.Option(None, "--model", help="Local checkpoint path or packaged model name (transformers, vllm; see `models`), or served model name (openai)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Model revision recorded in the provenance."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1"),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Environment variable holding the API key (openai backend)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Parallel requests (openai backend)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Per-call timeout in seconds (openai backend)."),
    json_mode: bool = typer.Option(False, "--json-mode", help="openai: use response_format json_object for servers without json_schema."),
    tensor_parallel_size: Optional[int] = typer.Option(None, "--tensor-parallel-size", help="vllm: GPUs per model replica."),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len", help="vllm: context length."),
    device: Optional[str] = typer.Option(None, "--device", help="transformers: cpu | cuda | auto."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="transformers/vllm: float32 | bfloat16 | float16 | auto."),
    threads: Optional[int] = typer.Option(None, "--threads", help="transformers on CPU: torch threads (default: free cores)."),
    token_budget: Optional[int] = typer.Option(None, "--token-budget", help="transformers: most padded prompt tokens per batch."),
    sampling: list[str] = typer.Option([], "--sampling", help="Override a sampling parameter, KEY=VALUE (repeatable)."),
    prompt_version: Optional[int] = typer.Option(None, "--prompt-version", help="Prompt version (default: 1 for rules, the highest (2) for LLM backends)."),
    prompts_dir: Optional[Path] = typer.Option(None, "--prompts-dir", help="Folder of prompts/<task>/v<N>.jinja."),
    id_column: str = typer.Option(DEFAULT_ID_COLUMN, "--id-column", help="Column with the patient id (first 12 chars used for the default)."),
    text_column: str = typer.Option(DEFAULT_TEXT_COLUMN, "--text-column", help="Column with the report text."),
    encoding: str = typer.Option("utf-8", "--encoding", help="Text encoding of the report files (e.g. latin-1, cp1252)."),
    cancer_type: Optional[str] = typer.Option(None, "--cancer-type", help="Cancer type shown to the model (default from the file name)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    max_attempts: int = typer.Option(3, "--max-attempts", min=1, help="Generation attempts per record (repair loop)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N inputs (try a prompt)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Render the prompts, print the first, call no model."),
    sectioning: str = typer.Option("auto", "--sectioning", help="refine_report: auto (LLM backends: sections-v2; rules: none) | sections-v2 | sections-v1 | none."),
    cache_dir: Optional[Path] = CacheDirOpt,
    executor: str = ExecutorOpt,
    address: Optional[str] = AddressOpt,
    replicas: int = ReplicasOpt,
    gpus_per_replica: Optional[float] = GpusOpt,
) -> None:
    """Run a knowledge task into a cached source (resumable; a rebuild generates nothing)."""
    try:
        inputs = _task_inputs(task, reports, cancer_types, id_column, text_column, cancer_type, encoding)
        version = prompt_version if prompt_version is not None else default_version(task, backend, prompts_dir)
        prompt = load_prompt(task, version, prompts_dir)
        overrides = _parse_sampling(sampling)
        if dry_run:
            if task == "refine_report":
                inputs = apply_sectioning(inputs, resolve_version(sectioning, backend))
            _print_dry_run(prompt, inputs, overrides, limit)
            return
        options = dict(
            model=model, revision=revision, base_url=base_url, api_key_env=api_key_env,
            concurrency=concurrency, timeout=timeout, json_mode=json_mode or None,
            tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
            device=device, dtype=dtype, threads=threads, token_budget=token_budget,
        )
        cdir = cache_dir_or_default(cache_dir)
        with _LazyProgress(f"{task} → {source}") as prog:
            summary = api.run_task(
                task, inputs, source, backend, cdir, backend_options=options,
                prompt_version=prompt_version, prompts_dir=prompts_dir, sampling_overrides=overrides,
                batch_size=batch_size, max_attempts=max_attempts, limit=limit, sectioning=sectioning,
                executor=executor, address=address, replicas=replicas, gpus_per_replica=gpus_per_replica,
                progress=prog.advance, on_total=prog.total,
            )
    except (InputError, PromptError, CacheError, BackendError, ValueError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"I/O error: {e}", 1)
    _print_summary(task, source, summary)


class _LazyProgress:
    """A progress bar that appears once the build knows its work (after the backend loaded and
    the inputs were checked), so a bad --model or an unreachable server is one error line."""

    def __init__(self, label: str):
        self._prog = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )
        self._tid = self._prog.add_task(label, total=None)
        self._started = False

    def total(self, n: int) -> None:
        self._prog.update(self._tid, total=n)
        if not self._started:
            self._prog.start()
            self._started = True

    def advance(self, n: int) -> None:
        self._prog.advance(self._tid, n)

    def __enter__(self) -> "_LazyProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._prog.stop()


def _task_inputs(task: str, reports: list[Path], cancer_types: str, id_column: str, text_column: str,
                 cancer_type: str | None, encoding: str) -> list[TaskInput]:
    if task == "refine_report":
        if not reports:
            fail("refine_report needs --reports FILE (CSV or JSONL)")
        return api.report_inputs(reports, id_column, text_column, cancer_type, encoding)
    if task == "pbk":
        if not cancer_types:
            fail("pbk needs --cancer-types, e.g. --cancer-types BLCA,LUAD")
        return cancer_type_inputs([c for c in cancer_types.split(",") if c.strip()])
    fail(f"unknown task {task!r}; tasks: refine_report, pbk")


def _print_dry_run(prompt: Prompt, inputs: list[TaskInput], overrides: dict[str, Any], limit: int | None) -> None:
    todo = [i for i in inputs if not i.skip_reason][: limit or None]
    if not todo:
        fail("nothing to render: every input was skipped")
    msgs = prompt.render(**todo[0].variables)
    console.print(f"[bold]{prompt.path}[/] sha256={prompt.sha256[:12]} schema={prompt.schema_name} "
                  f"sampling={ {**prompt.sampling, **overrides} }")
    console.print(f"{len(todo)} prompt(s) rendered; first ({todo[0].case_id}):")
    for m in msgs:
        out.print(f"--- {m['role']} ---", style="bold cyan")
        out.print(m["content"], highlight=False, markup=False)


def _print_summary(task: str, source: str, summary: BuildSummary) -> None:
    t = Table(title=f"kemm-knowledge build {task} → {source}", show_header=True)
    for col in ("inputs", "ok", "failed", "skipped", "cached", "generated", "elapsed"):
        t.add_column(col, justify="right")
    t.add_row(str(summary.total), str(summary.ok), str(summary.failed), str(summary.skipped),
              str(summary.cached), str(summary.generated), f"{summary.elapsed_s:.1f} s")
    out.print(t)
    if summary.corrupt_lines:
        console.print(f"[yellow]warning:[/] {summary.corrupt_lines} corrupt line(s) in records.jsonl were ignored and regenerated")
    if summary.failures:
        console.print(f"[yellow]{len(summary.failures)} failure(s) recorded[/] (e.g. {', '.join(summary.failures[:5])}); "
                      f"see `kemm-knowledge show {source} <case>`")
