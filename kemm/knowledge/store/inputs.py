"""Inputs of the knowledge tasks: patient reports (CSV/JSONL) and cancer types.

Defaults fit the tcga-path-report files: patient id = first 12 characters of
``pdf_file_name_path`` (a TCGA barcode), text = ``ocr_text``.  Several reports
of one patient are joined in file order.  Texts shorter than
``min_chars`` become ``skipped`` records with a reason, not silent drops.
"""
from __future__ import annotations

from kemm.knowledge.errors import KnowledgeError

import codecs
import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ID_COLUMN = "pdf_file_name_path"
DEFAULT_TEXT_COLUMN = "ocr_text"
MIN_CHARS = 50
REPORT_SEPARATOR = "\n\n----- next report -----\n\n"

# tcga-path-report organ files -> TCGA study code (LUNG mixes LUAD/LUSC; see --cancer-type).
FILE_CANCER_TYPES = {
    "BLADDER": "BLCA",
    "BRAIN": "GBMLGG",
    "CERVIX": "CESC",
    "CRC": "COADREAD",
    "HEADNNECK": "HNSC",
    "LIVER": "LIHC",
    "OVARIAN": "OV",
    "PANCREAS": "PAAD",
    "PROSTATE": "PRAD",
    "LUNG": "LUNG",
    "UTEROUS": "UCEC",
}

CANCER_NAMES = {
    "BLCA": "bladder urothelial carcinoma",
    "BRCA": "breast invasive carcinoma",
    "GBMLGG": "glioblastoma and lower-grade glioma",
    "LUAD": "lung adenocarcinoma",
    "LUSC": "lung squamous cell carcinoma",
    "UCEC": "uterine corpus endometrial carcinoma",
    "KIRC": "kidney renal clear cell carcinoma",
    "HNSC": "head and neck squamous cell carcinoma",
    "COADREAD": "colon and rectum adenocarcinoma",
    "LIHC": "liver hepatocellular carcinoma",
    "PAAD": "pancreatic adenocarcinoma",
    "SKCM": "skin cutaneous melanoma",
    "STAD": "stomach adenocarcinoma",
    "CESC": "cervical squamous cell carcinoma and endocervical adenocarcinoma",
    "OV": "ovarian serous cystadenocarcinoma",
    "PRAD": "prostate adenocarcinoma",
}

TCGA_BARCODE = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}$")


class InputError(KnowledgeError):
    pass


@dataclass
class TaskInput:
    """One unit of work: ``case_id`` plus the variables the prompt renders."""

    case_id: str
    variables: dict[str, Any]
    key_text: str  # the task's input text (its sha is the record's input_sha; audits compare it)
    skip_reason: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _count_alnum(text: str, stop: int) -> int:
    """Letters/digits in ``text``, counting no further than ``stop`` (all a skip decision needs)."""
    n = 0
    for ch in text:
        if ch.isalnum():
            n += 1
            if n >= stop:
                break
    return n


def cancer_type_for_file(path: Path) -> str:
    stem = re.sub(r"_\d+$", "", Path(path).stem).upper()
    return FILE_CANCER_TYPES.get(stem, "UNKNOWN")


UNDECODABLE = "__kemm_undecodable__"  # row key: why the row's bytes were not valid UTF-8 (the case is skipped)
_BOM = b"\xef\xbb\xbf"


_ESCAPED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8


def _bad_offsets(text: str) -> list[int]:
    """Byte offsets (in the encoded text) of every byte that was not valid UTF-8, in one pass."""
    out, last, offset = [], 0, 0
    for m in _ESCAPED.finditer(text):
        offset += len(text[last : m.start()].encode("utf-8", "surrogateescape"))
        out.append(offset)
        offset, last = offset + 1, m.end()
    return out


def _sniff_delimiter(header: str) -> str:
    """The delimiter of a CSV header line: the most frequent of , ; TAB | (a comma by default)."""
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def read_rows(path: Path, encoding: str = "utf-8") -> list[dict[str, Any]]:
    """Rows of a CSV (delimiter sniffed) or JSONL report file; a leading UTF-8 BOM is ignored.

    A row holding bytes that are not UTF-8 is kept with ``UNDECODABLE`` naming the file, line
    and byte offset (its values with U+FFFD in their place): that case becomes a skipped record,
    and the other rows are read as usual. ``encoding`` other than UTF-8 (``--encoding latin-1``):
    the whole file is decoded with it first (a byte it cannot decode is an InputError).
    """
    if not path.is_file():
        raise InputError(f"{path}: no such report file")
    data = _as_utf8(path, path.read_bytes(), encoding)
    skip = len(_BOM) if data.startswith(_BOM) else 0
    text = data[skip:].decode("utf-8", errors="surrogateescape")
    bad = [skip + o for o in _bad_offsets(text)]
    line_of = {o: data.count(b"\n", 0, o) + 1 for o in bad}
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(path, text)
    else:
        csv.field_size_limit(2**31 - 1)
        lines = io.StringIO(text, newline="")
        reader = csv.DictReader(lines, delimiter=_sniff_delimiter(text.split("\n", 1)[0]))
        rows, first = [], 2
        for row in reader:
            row["__lines__"] = (first, reader.line_num)
            first = reader.line_num + 1
            rows.append(row)
    for row in rows:
        lo, hi = row.pop("__lines__")
        hit = [o for o in bad if lo <= line_of[o] <= hi]
        if hit:
            for k, v in list(row.items()):
                if isinstance(v, str):
                    row[k] = v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            row[UNDECODABLE] = (f"{path}: line {line_of[hit[0]]}: byte offset {hit[0]} is not valid UTF-8 "
                                f"({len(hit)} such byte(s) in this row); re-save the file as UTF-8 or pass its --encoding")
    return rows


def _as_utf8(path: Path, data: bytes, encoding: str) -> bytes:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise InputError(f"--encoding {encoding!r}: unknown text encoding (e.g. utf-8, latin-1, cp1252)") from None
    if name == "utf-8":
        return data
    try:
        return data.decode(name).encode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"{path}: line {line}: byte offset {e.start} is not valid {encoding}; "
                         "check --encoding") from None


def _jsonl_rows(path: Path, text: str) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{i}: not valid JSON ({e.msg}); expected one JSON object per line") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
        obj["__lines__"] = (i, i)
        rows.append(obj)
    return rows


def read_reports(
    path: Path | str,
    id_column: str = DEFAULT_ID_COLUMN,
    text_column: str = DEFAULT_TEXT_COLUMN,
    cancer_type: str | None = None,
    min_chars: int = MIN_CHARS,
    encoding: str = "utf-8",
) -> list[TaskInput]:
    """Reports grouped per patient, in first-seen order."""
    path = Path(path)
    rows = read_rows(path, encoding)
    if not rows:
        raise InputError(f"{path}: no rows")
    for col in (id_column, text_column):
        if col not in rows[0]:
            raise InputError(
                f"{path}: no column {col!r}; columns are {[c for c in rows[0] if c != UNDECODABLE]}. "
                "Name the right ones with --id-column / --text-column."
            )
    ctype = cancer_type or cancer_type_for_file(path)
    grouped: dict[str, list[str]] = {}
    row_numbers: dict[str, list[int]] = {}
    bad_ids: dict[str, str] = {}
    for i, row in enumerate(rows, start=2):
        raw_id = str(row.get(id_column) or "").strip()
        if not raw_id:
            raise InputError(f"{path}: row {i}: empty {id_column!r}; expected a patient id")
        case_id = raw_id[:12] if id_column == DEFAULT_ID_COLUMN else raw_id
        if id_column == DEFAULT_ID_COLUMN and not TCGA_BARCODE.match(case_id):
            # One malformed row must not stop a build of thousands: it becomes a skipped
            # record that names the file, row, column and the expected form.
            case_id = raw_id
            bad_ids[case_id] = (
                f"{path}: row {i}: {id_column!r} = {raw_id!r} does not start with a TCGA patient "
                "barcode (TCGA-XX-XXXX); fix the row or pass --id-column for another id"
            )
        if row.get(UNDECODABLE):
            bad_ids[case_id] = row[UNDECODABLE]
        text = row.get(text_column)
        text = "" if text is None else str(text)
        grouped.setdefault(case_id, []).append(text)
        row_numbers.setdefault(case_id, []).append(i)
    out = []
    for case_id, texts in grouped.items():
        texts = [t.strip() for t in texts if t and t.strip()]
        joined = REPORT_SEPARATOR.join(texts)
        skip = None
        n_alnum = _count_alnum(joined, stop=min_chars)
        if case_id in bad_ids:
            skip = bad_ids[case_id]
        elif n_alnum < min_chars:
            where = ", ".join(map(str, row_numbers[case_id]))
            skip = (f"{path}: row {where} (case {case_id}): {text_column!r} has {n_alnum} letters/digits "
                    f"(< {min_chars}): nothing to refine; expected the report's text")
        out.append(
            TaskInput(
                case_id=case_id,
                variables={"case_id": case_id, "cancer_type": ctype, "report_text": joined},
                key_text=joined,
                skip_reason=skip,
                meta={"n_reports": len(texts), "file": str(path)},
            )
        )
    return out


def cancer_type_inputs(cancer_types: list[str]) -> list[TaskInput]:
    out = []
    for ct in cancer_types:
        ct = ct.strip().upper()
        if not re.fullmatch(r"[A-Z]{2,10}", ct):
            raise InputError(f"cancer type {ct!r}: expected a TCGA study code such as BLCA or LUAD")
        name = CANCER_NAMES.get(ct, "")
        out.append(
            TaskInput(
                case_id=ct,
                variables={"cancer_type": ct, "cancer_name": name},
                key_text=f"{ct}|{name}",
            )
        )
    return out
