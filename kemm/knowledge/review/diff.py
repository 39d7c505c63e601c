"""Field-by-field agreement of two refine_report sources over their shared cases.

Values are compared after normalisation (case, whitespace, punctuation of free
text; ``"2.50 cm"`` = ``"25 mm"``).  ``pT`` is also compared at the number
level (``T2a`` ~ ``T2b`` agree as ``T2``).  Categorical fields get Cohen's
kappa, with ``"not reported"`` as one of the categories — disagreeing on
*whether* something is stated is a disagreement.  Agreement among the cases
where both sources state a value is reported beside it, because a rules
extractor and an LLM differ most in how often they say anything.
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kemm._io import atomic_write_text
from kemm.knowledge.errors import KnowledgeError
from kemm.knowledge.rules.staging import CATEGORICAL_FIELDS, CODE_FIELDS, DIFF_FIELDS, NOT_REPORTED
from kemm.knowledge.store.cache import SourceCache

CATEGORICAL = CATEGORICAL_FIELDS
FIELDS = DIFF_FIELDS


class DiffError(KnowledgeError):
    """Two sources that cannot be compared, or an --out file of unknown type."""


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa of two raters over the same items; None when undefined
    (chance agreement 1, e.g. both raters always give the same single label)."""
    if len(a) != len(b):
        raise ValueError(f"kappa needs paired labels, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n)
    if pe >= 1.0:
        return None
    return (po - pe) / (1.0 - pe)


def normalize_value(fld: str, v: Any) -> str:
    if v is None:
        return NOT_REPORTED
    s = str(v).strip()
    if s.lower() == NOT_REPORTED:
        return NOT_REPORTED
    if fld == "tumor_size":
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(cm|mm)", s.lower())
        if m:
            mm = float(m.group(1)) * (10 if m.group(2) == "cm" else 1)
            return f"{mm:g} mm"
    if fld == "histologic_type":
        return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()
    if fld in CODE_FIELDS:
        return s
    return s.lower()


def _field_value(out: dict[str, Any], fld: str) -> str:
    if fld == "pT_number":
        t = normalize_value("pT", out.get("pT"))
        m = re.match(r"T([0-4])", t)
        return f"T{m.group(1)}" if m else t
    return normalize_value(fld, out.get(fld))


@dataclass
class FieldAgreement:
    field: str
    n: int
    agree: int
    both_reported: int
    agree_both_reported: int
    kappa: float | None
    disagreements: list[tuple[str, str, int, list[str]]] = field(default_factory=list)  # (a, b, count, examples)

    @property
    def agreement(self) -> float | None:
        return self.agree / self.n if self.n else None

    @property
    def agreement_both_reported(self) -> float | None:
        return self.agree_both_reported / self.both_reported if self.both_reported else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.field, "n": self.n, "agreement": _r(self.agreement), "kappa": _r(self.kappa),
            "both_reported": self.both_reported, "agreement_both_reported": _r(self.agreement_both_reported),
            "disagreements": [{"a": a, "b": b, "count": c, "examples": ex} for a, b, c, ex in self.disagreements],
        }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


@dataclass
class SourceDiff:
    a: str
    b: str
    shared: int
    only_a: int
    only_b: int
    not_ok: int  # shared cases where either side failed or was skipped
    fields: list[FieldAgreement]

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "shared_ok_cases": self.shared, "only_in_a": self.only_a,
                "only_in_b": self.only_b, "shared_but_not_ok": self.not_ok,
                "fields": [f.as_dict() for f in self.fields]}

    def top_disagreements(self, k: int = 10) -> list[tuple[str, str, str, int, list[str]]]:
        rows = [(f.field, a, b, c, ex) for f in self.fields if f.field != "pT_number" for a, b, c, ex in f.disagreements]
        return sorted(rows, key=lambda r: -r[3])[:k]

    def to_markdown(self) -> str:
        lines = [f"# kemm-knowledge diff `{self.a}` vs `{self.b}`", "",
                 f"{self.shared} shared cases with ok outputs in both; {self.only_a} only in {self.a}, "
                 f"{self.only_b} only in {self.b}, {self.not_ok} shared but failed/skipped in one.", "",
                 "| field | n | agreement | kappa | both reported | agreement (both reported) |",
                 "|---|---:|---:|---:|---:|---:|"]
        for f in self.fields:
            lines.append(f"| {f.field} | {f.n} | {_pct(f.agreement)} | {_fmt(f.kappa)} | {f.both_reported} | "
                         f"{_pct(f.agreement_both_reported)} |")
        lines += ["", "## Most frequent disagreements", "", f"| field | {self.a} | {self.b} | cases | examples |",
                  "|---|---|---|---:|---|"]
        for fld, a, b, c, ex in self.top_disagreements(15):
            lines.append(f"| {fld} | {_md(a)} | {_md(b)} | {c} | {', '.join(ex)} |")
        return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _md(s: str) -> str:
    return s.replace("|", "\\|")[:60]


def diff_outputs(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], name_a: str = "A", name_b: str = "B",
                 fields: tuple[str, ...] = FIELDS, n_examples: int = 3, top: int = 5) -> SourceDiff:
    """Agreement of two {case id: RefinedReport dict} maps (None = not ok) over shared case ids."""
    shared_ids = sorted(set(a) & set(b))
    ok_ids = [c for c in shared_ids if a[c] is not None and b[c] is not None]
    out: list[FieldAgreement] = []
    for fld in fields:
        va = [_field_value(a[c], fld) for c in ok_ids]
        vb = [_field_value(b[c], fld) for c in ok_ids]
        pairs: dict[tuple[str, str], list[str]] = defaultdict(list)
        for c, x, y in zip(ok_ids, va, vb):
            if x != y:
                pairs[(x, y)].append(c)
        both = [(x, y) for x, y in zip(va, vb) if x != NOT_REPORTED and y != NOT_REPORTED]
        dis = sorted(((x, y, len(cs), cs[:n_examples]) for (x, y), cs in pairs.items()), key=lambda t: (-t[2], t[0], t[1]))
        out.append(FieldAgreement(
            field=fld, n=len(ok_ids), agree=sum(x == y for x, y in zip(va, vb)),
            both_reported=len(both), agree_both_reported=sum(x == y for x, y in both),
            kappa=cohen_kappa(va, vb) if fld in CATEGORICAL else None, disagreements=dis[:top],
        ))
    return SourceDiff(name_a, name_b, len(ok_ids), len(set(a) - set(b)), len(set(b) - set(a)),
                      len(shared_ids) - len(ok_ids), out)


def _outputs(cache_dir: Path | str, source: str) -> dict[str, dict[str, Any] | None]:
    sc = SourceCache(cache_dir, source)
    man = sc.read_manifest()
    task = man.get("identity", {}).get("task")
    if task not in (None, "refine_report"):
        raise DiffError(f"source {source!r} is a {task!r} source; diff compares refine_report sources")
    return {str(cid): r.ok_output for cid, r in sc.by_case().items()}


def diff_sources(cache_dir: Path | str, a: str, b: str, **kw: Any) -> SourceDiff:
    da, db = _outputs(cache_dir, a), _outputs(cache_dir, b)
    if not set(da) & set(db):
        raise DiffError(f"sources {a!r} and {b!r} share no case ids ({len(da)} and {len(db)} cases)")
    return diff_outputs(da, db, a, b, **kw)


def write_diff(d: SourceDiff, path: Path) -> None:
    if path.suffix.lower() == ".json":
        atomic_write_text(path, json.dumps(d.as_dict(), indent=2, ensure_ascii=False) + "\n")
    elif path.suffix.lower() in (".md", ".markdown"):
        atomic_write_text(path, d.to_markdown())
    else:
        raise DiffError(f"--out {path}: use a .json or .md file name")
