"""One self-contained HTML page for an audit: summary first, then flagged records.

No external assets (inline CSS, no scripts, no fonts), so the file can be
mailed or attached to a CI run.  Every piece of report or model text goes
through :func:`html.escape` — a report is data and may contain markup.
"""
from __future__ import annotations

import html
from collections import defaultdict
from typing import Any

from kemm import __version__
from kemm.knowledge.records import AuditDuplicates, AuditFaithfulness, AuditValidity, Stats
from kemm.knowledge.review.audit import AuditReport, RecordAudit
from kemm.knowledge.review.claims import Claim
from kemm.knowledge.rules.staging import REFINED_FIELDS
from kemm.knowledge.store.cache import now_iso

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1400px;color:#1d232a;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:0 0 6px}.muted{color:#57606a}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;min-width:130px}.card b{display:block;font-size:22px}
.card.bad b{color:#cf222e}.card.good b{color:#1a7f37}
table{border-collapse:collapse;margin:6px 0 12px}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;height:10px;background:#8c959f;vertical-align:middle;margin-right:6px}
.rec{border:1px solid #d0d7de;border-radius:8px;padding:12px;margin:14px 0}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:12px}
pre.src{white-space:pre-wrap;word-break:break-word;background:#f6f8fa;border:1px solid #d0d7de;padding:8px;max-height:460px;overflow:auto;margin:0;font-size:12px}
mark.bad{background:#ffd8d3;color:#82071e;border-bottom:2px solid #cf222e;padding:0 1px}
ul.claims{margin:4px 0 8px;padding-left:20px}code{background:#eff1f3;padding:0 3px;border-radius:3px}
.toc a{margin-right:8px}
"""


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _highlight(text: str, claims: list[Claim]) -> str:
    """``text`` escaped, with the spans of ``claims`` wrapped in <mark>."""
    out, pos = [], 0
    for c in sorted(claims, key=lambda c: c.start):
        if c.start < pos:
            continue
        out.append(esc(text[pos : c.start]))
        out.append(f'<mark class="bad" title="{esc(c.kind)}: {esc(c.value)} not found in the source">{esc(text[c.start:c.end])}</mark>')
        pos = c.end
    out.append(esc(text[pos:]))
    return "".join(out)


def _card(label: str, value: str, cls: str = "") -> str:
    return f'<div class="card {cls}"><span class="muted">{esc(label)}</span><b>{esc(value)}</b></div>'


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>"


def _output_table(rec: RecordAudit) -> str:
    out = rec.output or {}
    by_where: dict[str, list[Claim]] = defaultdict(list)
    for c in rec.unsupported:
        by_where[c.where].append(c)
    rows = []
    for f in REFINED_FIELDS:
        if f in out:
            rows.append(f"<tr><th>{esc(f)}</th><td>{_highlight(str(out[f]), by_where.get(f, []))}</td></tr>")
    for i, s in enumerate(out.get("key_statements") or []):
        w = f"key_statements[{i}]"
        rows.append(f"<tr><th>statement {i + 1}</th><td>{_highlight(str(s), by_where.get(w, []))}</td></tr>")
    if "summary" in out:
        rows.append(f"<tr><th>summary</th><td>{_highlight(str(out['summary']), by_where.get('summary', []))}</td></tr>")
    known = set(REFINED_FIELDS) | {"key_statements", "summary"}
    for k, v in out.items():  # other schemas: show as is
        if k not in known:
            rows.append(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _record_html(rec: RecordAudit) -> str:
    items = "".join(
        f"<li><code>{esc(c.text)}</code> in <code>{esc(c.where)}</code> — {esc(c.kind)} "
        f"<b>{esc(c.value)}</b> not found in the source report</li>"
        for c in rec.unsupported
    )
    return (
        f'<div class="rec" id="case-{esc(rec.case_id)}"><h3>{esc(rec.case_id)} '
        f'<span class="muted">— {len(rec.unsupported)} unsupported of {len(rec.claims)} claims</span></h3>'
        f'<ul class="claims">{items}</ul><div class="cols">'
        f'<div><b>Source report</b><pre class="src">{esc(rec.source_text)}</pre></div>'
        f"<div><b>Output</b>{_output_table(rec)}</div></div></div>"
    )


def render_audit_html(report: AuditReport, max_records: int = 300) -> str:
    parts = _header(report)
    parts += _validity_section(report.validity)
    if report.faithfulness is not None:
        parts += _faithfulness_section(report.faithfulness)
    if report.coverage:
        parts += _coverage_section(report.coverage)
    parts += _duplicates_section(report.duplicates)
    if report.faithfulness is not None:
        parts += _flagged_section(report, max_records)
    parts.append("</body></html>\n")
    return "".join(parts)


def _header(report: AuditReport) -> list[str]:
    """Title, provenance line, summary cards and the one-paragraph verdict."""
    ident = report.as_dict()["identity"]
    v = report.validity
    m = report.metrics
    f = report.faithfulness
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>kemm audit — {esc(report.source)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Audit of knowledge source <code>{esc(report.source)}</code></h1>",
        f'<div class="muted">task {esc(report.task)} · backend {esc(ident.get("backend"))} · model {esc(ident.get("model_id"))} · '
        f'prompt {esc(ident.get("prompt_name"))}{_version(ident)} · '
        f"audited {esc(now_iso())} by kemm {esc(__version__)}</div>",
        '<h2 id="summary">Summary</h2><div class="cards">',
        _card("records", str(v.records)),
        _card("parse rate", _pct(m.get("parse_rate")), "good" if m.get("parse_rate", 0) >= 0.95 else "bad"),
    ]
    if f is not None:
        parts += [
            _card("faithful records", _pct(m.get("faithfulness")), "good" if (m.get("faithfulness") or 0) >= 0.95 else "bad"),
            _card("claims supported", _pct(m.get("claim_support"))),
            _card("flagged records", str(f.records_with_unsupported), "bad" if f.records_with_unsupported else "good"),
            _card("unverifiable", str(f.unverifiable_records), "bad" if f.unverifiable_records else ""),
        ]
    parts.append(_card("truncated", str(len(v.truncated)), "bad" if v.truncated else ""))
    parts.append("</div>")
    if f is not None:
        parts.append(
            f"<p>Faithfulness: {f.checked_records} records checked against their source reports; "
            f"{f.records_with_unsupported} contain at least one number, size, count, TNM, stage or grade "
            f"that does not occur in the report ({f.claims} claims, {f.supported_claims} supported).</p>"
        )
    else:
        parts.append("<p>No source reports for this task: validity, coverage and duplicates only.</p>")
    return parts


def _validity_section(v: AuditValidity) -> list[str]:
    parts: list[str] = []
    parts.append("<h2>Validity</h2>")
    parts.append(_kv_table([
        ("ok / failed / skipped", f"{v.ok} / {v.failed} / {v.skipped}"),
        ("corrupt lines ignored", v.corrupt_lines),
        ("attempts (histogram)", ", ".join(f"{k}: {n}" for k, n in v.attempts.items()) or "—"),
        ("finish reasons", ", ".join(f"{k}: {n}" for k, n in v.finish_reasons.items()) or "—"),
        ("truncated records", ", ".join(v.truncated[:20]) or "none"),
        ("statements per record", _fmt_stats(v.statements_per_record)),
        ("statement length (chars)", _fmt_stats(v.statement_chars)),
        ("statement length (words)", _fmt_stats(v.statement_words)),
        ("ok records that no longer validate", ", ".join(v.ok_but_invalid[:20]) or "none"),
    ]))
    if v.top_errors:
        parts.append("<table><tr><th>most frequent failure errors</th><th>records</th></tr>"
                     + "".join(f"<tr><td>{esc(e)}</td><td class=num>{n}</td></tr>" for e, n in v.top_errors) + "</table>")
    return parts


def _faithfulness_section(f: AuditFaithfulness) -> list[str]:
    parts: list[str] = []
    parts.append("<h2>Faithfulness by claim kind</h2><table><tr><th>kind</th><th>claims</th><th>unsupported</th><th>supported</th></tr>")
    for k, c in f.by_kind.items():
        sup = 1 - c.unsupported / c.claims if c.claims else None
        parts.append(f"<tr><td>{esc(k)}</td><td class=num>{c.claims}</td><td class=num>{c.unsupported}</td><td class=num>{_pct(sup)}</td></tr>")
    parts.append("</table>")
    if f.top_unsupported:
        parts.append("<table><tr><th>most frequent unsupported values</th><th>records</th></tr>"
                     + "".join(f"<tr><td>{esc(k)}</td><td class=num>{n}</td></tr>" for k, n in f.top_unsupported) + "</table>")
    cp = f.copied_from_prompt
    if cp is not None and cp.records:
        parts.append(f"<p><b>{cp.records} record(s) state a value the prompt shows as an example but the report "
                     f"does not</b> (copied from the prompt): {esc('; '.join(f'{k} ×{n}' for k, n in cp.top))}</p>")
    if f.empty_source_records:
        parts.append(f"<p><b>{len(f.empty_source_records)} record(s) were produced from an empty or near-empty "
                     f"source report</b> (every claim in them is unsupported): "
                     f"{esc(', '.join(f.empty_source_records[:30]))}</p>")
    if f.unverifiable_reasons:
        parts.append("<table><tr><th>why records could not be checked</th><th>records</th></tr>"
                     + "".join(f"<tr><td>{esc(k)}</td><td class=num>{n}</td></tr>" for k, n in f.unverifiable_reasons) + "</table>")
    return parts


def _coverage_section(coverage: dict[str, float]) -> list[str]:
    parts: list[str] = []
    parts.append("<h2>Coverage: share of “not reported” per field</h2><table><tr><th>field</th><th>not reported</th></tr>")
    for k, x in coverage.items():
        parts.append(f'<tr><td>{esc(k)}</td><td><span class="bar" style="width:{int(200 * x)}px"></span>{_pct(x)}</td></tr>')
    parts.append("</table>")
    return parts


def _duplicates_section(dup: AuditDuplicates) -> list[str]:
    parts: list[str] = []
    parts.append("<h2>Duplicate statements</h2>")
    parts.append(f"<p>{dup.records_with_repeated_statements} record(s) repeat a statement within themselves.</p>")
    if dup.common_statements:
        parts.append("<table><tr><th>statement repeated across records (normalised)</th><th>records</th></tr>"
                     + "".join(f"<tr><td>{esc(s)}</td><td class=num>{n}</td></tr>" for s, n in dup.common_statements) + "</table>")
    return parts


def _flagged_section(report: AuditReport, max_records: int) -> list[str]:
    parts: list[str] = []
    flagged = sorted(report.flagged, key=lambda r: (-len(r.unsupported), r.case_id))
    parts.append(f'<h2 id="flagged">Flagged records ({len(flagged)})</h2>')
    if flagged:
        parts.append('<p class="toc">' + " ".join(f'<a href="#case-{esc(r.case_id)}">{esc(r.case_id)}</a>' for r in flagged[:max_records]) + "</p>")
    else:
        parts.append("<p>No record contains an unsupported claim.</p>")
    for r in flagged[:max_records]:
        parts.append(_record_html(r))
    if len(flagged) > max_records:
        parts.append(f"<p class=muted>{len(flagged) - max_records} more flagged record(s) not shown; see the JSON report.</p>")
    return parts


def _version(ident: dict[str, Any]) -> str:
    v, sha = ident.get("prompt_version"), str(ident.get("prompt_sha") or "")
    out = f" v{esc(v)}" if v is not None else ""
    return out + (f" {esc(sha[:12])}" if sha and sha != ident.get("prompt_name") else "")


def _fmt_stats(s: Stats) -> str:
    if not s.n:
        return "—"
    return f"mean {s.mean}, median {s.median}, min {s.min}, max {s.max} (n={s.n})"
