"""Inputs of the knowledge tasks: patient reports (CSV/JSONL) and cancer types.

Defaults fit the tcga-path-report files: patient id = first 12 characters of
``pdf_file_name_path`` (a TCGA barcode), text = ``ocr_text``.  Several reports
of one patient are joined in file order.  Texts shorter than
``min_chars`` become ``skipped`` records with a reason, not silent drops.
"""
from __future__ import annotations

from kemm.knowledge.errors import KnowledgeError

import csv
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


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"{path}: no such report file")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{i}: not valid JSON ({e.msg}); expected one JSON object per line") from None
                if not isinstance(obj, dict):
                    raise InputError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
                rows.append(obj)
        return rows
    csv.field_size_limit(2**31 - 1)
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def read_reports(
    path: Path | str,
    id_column: str = DEFAULT_ID_COLUMN,
    text_column: str = DEFAULT_TEXT_COLUMN,
    cancer_type: str | None = None,
    min_chars: int = MIN_CHARS,
) -> list[TaskInput]:
    """Reports grouped per patient, in first-seen order."""
    path = Path(path)
    rows = read_rows(path)
    if not rows:
        raise InputError(f"{path}: no rows")
    for col in (id_column, text_column):
        if col not in rows[0]:
            raise InputError(
                f"{path}: no column {col!r}; columns are {list(rows[0])}. "
                "Name the right ones with --id-column / --text-column."
            )
    ctype = cancer_type or cancer_type_for_file(path)
    grouped: dict[str, list[str]] = {}
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
        text = row.get(text_column)
        text = "" if text is None else str(text)
        grouped.setdefault(case_id, []).append(text)
    out = []
    for case_id, texts in grouped.items():
        texts = [t.strip() for t in texts if t and t.strip()]
        joined = REPORT_SEPARATOR.join(texts)
        skip = None
        n_alnum = _count_alnum(joined, stop=min_chars)
        if case_id in bad_ids:
            skip = bad_ids[case_id]
        elif n_alnum < min_chars:
            skip = f"report text has {n_alnum} letters/digits (< {min_chars}): nothing to refine"
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
