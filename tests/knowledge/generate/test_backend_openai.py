"""The ``openai`` backend against a loopback chat-completions server started here.

The server (``http.server`` on 127.0.0.1, port 0) answers from a script per
case: a valid object, invalid JSON, garbage, a hang, or HTTP 500.  Builds go
through the real langchain-openai / openai client stack and the shared repair
loop; every record ends ok or as a recorded failure.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest

from kemm.knowledge import api
from kemm.knowledge.generate.backends.base import BackendError
from kemm.knowledge.generate.backends.registry import create_backend
from kemm.knowledge.generate.backends.grammar import decoder_schema
from kemm.knowledge.store.cache import SourceCache
from kemm.knowledge.store.inputs import TaskInput, cancer_type_inputs
from kemm.knowledge.generate.schemas import PrognosticKnowledge, RefinedReport
from fakes import VALID_REPORT

pytest.importorskip("langchain_openai")

SECRET = "sk-kemm-test-secret-0123456789"
VALID_PBK = {
    "cancer_type": "BLCA",
    "prognostic_factors": [
        {"name": "pT stage", "category": "stage", "direction": "unfavourable",
         "statement": "Muscle-invasive and extravesical tumours carry a worse prognosis."},
    ],
    "risk_levels": {"low": "Non-invasive low grade tumour.", "intermediate": "Muscle-invasive, node negative.",
                    "high": "Node-positive or metastatic disease."},
}
HANG = object()


class ChatServer:
    """A scripted OpenAI chat-completions endpoint.

    ``script(case, n)`` gets the case id parsed from the prompt and how many
    requests that case has made (1-based) and returns the assistant text,
    ``(status, body)`` for an HTTP error, or ``HANG``.
    """

    def __init__(self, script: Callable[[str, int], Any]):
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.counts: dict[str, int] = {}
        self.pending_hangs = 0  # requests the server has not answered (HANG), right now
        self.release = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep pytest output clean
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                case = _case_of(body)
                with server.lock:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    server.counts[case] = n = server.counts.get(case, 0) + 1
                reply = server.script(case, n)
                if reply is HANG:
                    with server.lock:
                        server.pending_hangs += 1
                    server.release.wait(30)
                    with server.lock:
                        server.pending_hangs -= 1
                    return
                if isinstance(reply, tuple):
                    status, payload = reply
                    return self._send(status, {"error": {"message": payload, "type": "server_error"}})
                return self._send(200, _completion(body, reply))

            def _send(self, status: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "ChatServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _case_of(body: dict) -> str:
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    m = re.search(r"Case: (\S+)", user) or re.search(r"TCGA study code\): ([A-Z]+)", user)
    return m.group(1) if m else "?"


def _completion(body: dict, text: str) -> dict:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


def _reports(n: int = 2) -> list[TaskInput]:
    return [
        TaskInput(
            case_id=f"TCGA-ZZ-{i:04d}",
            variables={"case_id": f"TCGA-ZZ-{i:04d}", "cancer_type": "BLCA",
                       "report_text": f"Invasive urothelial carcinoma, high grade, pT2a N0, case {i}."},
            key_text=f"report {i}",
        )
        for i in range(n)
    ]


def _build(tmp_path: Path, server: ChatServer, inputs=None, task="refine_report", source="src", **kw):
    opts = {"model": "served-model", "base_url": server.base_url, "timeout": 5.0, "backoff_s": 0.01}
    opts.update(kw.pop("backend_options", {}))
    summary = api.run_task(task, inputs or _reports(), source, "openai", tmp_path / "cache",
                           backend_options=opts, **kw)
    return summary, SourceCache(tmp_path / "cache", source).by_case()


def test_valid_reply_carries_json_schema_and_hides_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with ChatServer(lambda case, n: json.dumps(VALID_REPORT)) as srv:
        summary, recs = _build(tmp_path, srv, backend_options={"concurrency": 2})
    assert summary.ok == 2 and summary.failed == 0
    assert all(r.status == "ok" and r.attempts == 1 for r in recs.values())
    fmt = srv.requests[0]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "RefinedReport"
    assert fmt["json_schema"]["schema"] == decoder_schema(RefinedReport)
    assert srv.requests[0]["temperature"] == 0.0 and srv.requests[0]["max_completion_tokens"] == 1024
    assert srv.headers[0]["authorization"] == f"Bearer {SECRET}"
    for f in (tmp_path / "cache").rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text(), f"API key leaked into {f}"
    man = SourceCache(tmp_path / "cache", "src").read_manifest()
    assert "OPENAI_API_KEY" in json.dumps(man)  # the variable's name is recorded, not its value


def test_invalid_json_then_valid_is_repaired_in_two_attempts(tmp_path):
    script = lambda case, n: '{"histologic_type": "urothelial' if n == 1 else json.dumps(VALID_REPORT)  # noqa: E731
    with ChatServer(script) as srv:
        summary, recs = _build(tmp_path, srv, inputs=_reports(1))
    rec = recs["TCGA-ZZ-0000"]
    assert rec.status == "ok" and rec.attempts == 2
    assert any("invalid JSON" in e for e in rec.errors)
    retry = srv.requests[1]["messages"]
    assert retry[-2]["role"] == "assistant" and "did not match the required JSON schema" in retry[-1]["content"]


def test_garbage_forever_is_a_recorded_failure_with_raw_text(tmp_path):
    with ChatServer(lambda case, n: "I cannot answer that.") as srv:
        summary, recs = _build(tmp_path, srv, inputs=_reports(1), max_attempts=2)
    rec = recs["TCGA-ZZ-0000"]
    assert summary.failed == 1
    assert rec.status == "failed" and rec.attempts == 2
    assert rec.raw_output == "I cannot answer that." and rec.output is None
    assert len(srv.requests) == 2


def test_hang_times_out_and_the_build_finishes(tmp_path):
    script = lambda case, n: HANG if case.endswith("0000") else json.dumps(VALID_REPORT)  # noqa: E731
    with ChatServer(script) as srv:
        summary, recs = _build(tmp_path, srv, max_attempts=2, backend_options={"timeout": 0.5})
        # The build finished while the server still held both hung requests open: the client gave
        # up on its own timeout (not a server reply, not a closed connection).
        assert srv.pending_hangs == 2 and not srv.release.is_set()
    assert recs["TCGA-ZZ-0001"].status == "ok"
    rec = recs["TCGA-ZZ-0000"]
    assert rec.status == "failed" and rec.attempts == 2
    assert all("timeout after 0.5 s" in e for e in rec.errors)
    assert srv.counts["TCGA-ZZ-0000"] == 2  # timeouts are not retried inside the backend


def test_http_500_then_ok_is_retried_with_backoff(tmp_path):
    script = lambda case, n: (500, "engine overloaded") if n == 1 else json.dumps(VALID_REPORT)  # noqa: E731
    with ChatServer(script) as srv:
        summary, recs = _build(tmp_path, srv, inputs=_reports(1))
    rec = recs["TCGA-ZZ-0000"]
    assert rec.status == "ok" and rec.attempts == 1
    assert rec.meta["http_tries"] == 2


def test_http_500_forever_is_bounded(tmp_path):
    with ChatServer(lambda case, n: (503, "down")) as srv:
        summary, recs = _build(tmp_path, srv, inputs=_reports(1), max_attempts=1,
                               backend_options={"max_retries": 2})
    rec = recs["TCGA-ZZ-0000"]
    assert rec.status == "failed" and "HTTP 503" in rec.errors[0] and "after 3 tries" in rec.errors[0]
    assert srv.counts["TCGA-ZZ-0000"] == 3


def test_unreachable_server_stops_the_build_before_writing(tmp_path):
    """issue 12: was exit 0 with every input recorded as failed; now one error, nothing written."""
    from typer.testing import CliRunner

    from kemm.knowledge.cli import app

    with pytest.raises(BackendError, match=r"--base-url http://127.0.0.1:9/v1: cannot reach"):
        api.run_task(
            "refine_report", _reports(1), "down", "openai", tmp_path / "cache", max_attempts=1,
            backend_options={"model": "m", "base_url": "http://127.0.0.1:9/v1", "timeout": 2.0, "backoff_s": 0.01},
        )
    assert not (tmp_path / "cache" / "down").exists()
    r = CliRunner().invoke(app, ["build", "pbk", "--cancer-types", "BLCA", "--backend", "openai", "--model", "m",
                                 "--base-url", "http://127.0.0.1:9/v1", "--source", "q", "--cache-dir", str(tmp_path)])
    assert r.exit_code == 2 and "cannot reach" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "q").exists()


def test_pbk_and_json_mode(tmp_path):
    def script(case, n):
        return json.dumps({**VALID_PBK, "cancer_type": case})

    with ChatServer(script) as srv:
        summary, recs = _build(tmp_path, srv, inputs=cancer_type_inputs(["BLCA", "LUAD"]), task="pbk",
                               backend_options={"json_mode": True})
    assert summary.ok == 2 and recs["LUAD"].output["cancer_type"] == "LUAD"
    body = srv.requests[0]
    assert body["response_format"] == {"type": "json_object"}
    assert '"prognostic_factors"' in body["messages"][0]["content"]  # schema handed over in the prompt
    PrognosticKnowledge.model_validate(recs["BLCA"].output)


def test_cli_build_with_openai_backend(tmp_path):
    from typer.testing import CliRunner

    from kemm.knowledge.cli import app
    from fakes import write_reports_csv

    csv = tmp_path / "reports.csv"
    write_reports_csv(csv, n=3)
    with ChatServer(lambda case, n: json.dumps(VALID_REPORT)) as srv:
        res = CliRunner().invoke(app, [
            "build", "refine_report", "--reports", str(csv), "--backend", "openai", "--base-url", srv.base_url,
            "--model", "served-name", "--concurrency", "3", "--timeout", "5", "--source", "reports-served",
            "--cache-dir", str(tmp_path / "cache"),
        ])
    assert res.exit_code == 0, res.output
    recs = SourceCache(tmp_path / "cache", "reports-served").by_case()
    assert len(recs) == 3 and all(r.status == "ok" for r in recs.values())
    assert {b["model"] for b in srv.requests} == {"served-name"}


def test_options_are_checked():
    with pytest.raises(BackendError, match="--base-url"):
        create_backend("openai", model="m")
    with pytest.raises(BackendError, match="does not use --tensor-parallel-size"):
        create_backend("openai", model="m", base_url="http://x/v1", tensor_parallel_size=2)
    with pytest.raises(BackendError, match="--concurrency"):
        create_backend("openai", model="m", base_url="http://x/v1", concurrency=0)
