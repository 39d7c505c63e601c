"""Find the report text a cache record was built from, by file and case id, checked by sha.

Imports: ``kemm.knowledge.errors``, ``records``, ``store.cache`` and ``store.inputs``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kemm.knowledge.errors import KnowledgeError
from kemm.knowledge.records import CacheRecord
from kemm.knowledge.store.cache import sha256_text
from kemm.knowledge.store.inputs import DEFAULT_ID_COLUMN, DEFAULT_TEXT_COLUMN, REPORT_SEPARATOR, InputError, read_rows


class AuditError(KnowledgeError):
    """An audit that cannot run: missing report files or columns, a bad --fail-under."""


class SourceTexts:
    """Finds the report text a record was built from, by file and case id, checked by sha."""

    def __init__(
        self,
        reports: list[Path] | None = None,
        id_column: str = DEFAULT_ID_COLUMN,
        text_column: str = DEFAULT_TEXT_COLUMN,
        base_dirs: list[Path] | None = None,
    ):
        self.explicit = [Path(p) for p in reports or []]
        self.id_column = id_column
        self.text_column = text_column
        self.base_dirs = base_dirs or []
        self._files: dict[tuple[str, str, str], dict[str, Any]] = {}
        for p in self.explicit:
            if not p.is_file():
                raise AuditError(f"--reports {p}: no such file")

    def _resolve(self, file: str) -> Path | None:
        p = Path(file)
        if p.is_file():
            return p
        for b in self.base_dirs:
            if (b / p).is_file():
                return b / p
        return None

    def _load(self, path: Path, id_col: str, text_col: str) -> dict[str, Any]:
        k = (str(path.resolve()), id_col, text_col)
        if k not in self._files:
            rows = read_rows(path)
            by_case: dict[str, list[str]] = {}
            row_text: dict[int, str] = {}
            if rows and (id_col not in rows[0] or text_col not in rows[0]):
                raise AuditError(f"{path}: needs columns {id_col!r} and {text_col!r}; it has {list(rows[0])[:12]}")
            for i, r in enumerate(rows):
                raw = str(r.get(id_col) or "").strip()
                cid = raw[:12] if id_col == DEFAULT_ID_COLUMN else raw
                t = "" if r.get(text_col) is None else str(r.get(text_col))
                row_text[i] = t
                by_case.setdefault(cid, []).append(t)
            self._files[k] = {"by_case": by_case, "rows": row_text}
        return self._files[k]

    def _candidates(self, path: Path, case_id: str, row: int | None, id_col: str, text_col: str) -> list[str]:
        d = self._load(path, id_col, text_col)
        out = []
        texts = d["by_case"].get(case_id, [])
        if texts:
            out.append(REPORT_SEPARATOR.join(t.strip() for t in texts if t and t.strip()))
            out += [t.strip() for t in texts]
        out = [t for t in out if t]
        if row is not None and row in d["rows"]:
            # The record's own row, also when its text is empty: output about an empty report
            # is then checked against nothing, and every claim is unsupported.
            out.insert(0, d["rows"][row].strip())
        return out

    def get(self, rec: CacheRecord) -> tuple[str | None, str | None]:
        """(text, None) or (None, why not).  A record without ``input_sha`` (an import
        that carried no report) accepts the first text found, marked unchecked."""
        meta = rec.input_meta or {}
        cid = str(rec.case_id)
        id_col = meta.get("id_column", self.id_column)
        text_col = meta.get("text_column", self.text_column)
        cands: list[str] = []
        tried: list[str] = []
        for p in self.explicit:
            cands += self._candidates(p, cid, None, self.id_column, self.text_column)
            tried.append(str(p))
        if meta.get("report_text"):  # a JSONL import that carried its report
            cands.append(str(meta["report_text"]).strip())
        if meta.get("file") and meta.get("format") != "jsonl":
            p = self._resolve(meta["file"])
            tried.append(str(meta["file"]) + ("" if p else " (missing)"))
            if p is not None:
                try:
                    cands += self._candidates(p, cid, meta.get("row"), id_col, text_col)
                except (InputError, AuditError, OSError) as e:
                    tried[-1] += f" ({e})"
        if not cands:
            where = ", ".join(tried) if tried else "no report file recorded; pass --reports FILE"
            return None, f"source report of case {cid} not found ({where})"
        want = rec.input_sha
        if not want:
            return cands[0], None
        for t in cands:
            if sha256_text(t) == want:
                return t, None
        return None, f"source text of case {cid} differs from the one the record was built from (input_sha mismatch)"
