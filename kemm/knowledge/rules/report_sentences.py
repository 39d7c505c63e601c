"""The report's own sentences as knowledge tokens: the sectioned report, cut into sentences.

The rules extractor keeps a fixed set of fields (stage, grade, TNM, margins...); whatever else
a pathologist wrote (fibrosis, necrosis, vascular invasion phrased freely, tumour focality,
a histological variant) never reaches the model through it.  This template set keeps it: the
diagnostic part of the report (``sectioning``, ``SENTENCES_SECTIONING``: boilerplate, gross
description and block lists dropped) is cut into sentences.  OCR lines are joined unless a
line ends a sentence (``. ; ! ?``) or the next one starts a list item (``-``, ``*``, ``1.``,
``A)``) or a synoptic label (``Histologic Grade:``); a line ending in ``:`` always takes the
next (the label's value).  The joined text is split at sentence ends, list markers are dropped,
a repeated piece is kept once, a piece shorter than ``MIN_CHARS`` is joined to the next, a
sentence longer than ``MAX_CHARS`` is cut there (the schema's limit), and at most
``MAX_SENTENCES`` are kept, in report order.  No LLM and no judgement is involved, so the
statements are exactly as faithful as the OCR text.

``REPORT_SENTENCES_VERSION`` names these rules; it is part of the derived source's identity.

Imports: the standard library and ``kemm.knowledge.generate.sectioning``.
"""
from __future__ import annotations

import re

from kemm.knowledge.generate.sectioning import section_report

REPORT_SENTENCES_VERSION = "report-sentences-v1"
SENTENCES_SECTIONING = "sections-v2"
KIND = "report"
MIN_CHARS = 40
MAX_CHARS = 300
MAX_SENTENCES = 48

_BULLET = re.compile(r"^(?:[-*•]+|\(?[0-9]{1,2}[.)]|\(?[A-Za-z][.)])\s+")
_LABEL = re.compile(r"^[A-Z][A-Za-z /&(),-]{1,40}:")
_ENDS = (".", ";", "!", "?")
_SENT = re.compile(r"(?<=[.;!?])\s+")


def _units(kept: str) -> list[str]:
    """OCR lines joined into list items / paragraphs (module docstring)."""
    units: list[str] = []
    for line in kept.splitlines():
        line = " ".join(line.split())
        if not line:
            continue
        bullet = _BULLET.match(line)
        if bullet:
            line = line[bullet.end():]
        if units and (units[-1].endswith(":") or not (bullet or units[-1].endswith(_ENDS) or _LABEL.match(line))):
            units[-1] = f"{units[-1]} {line}"
        else:
            units.append(line)
    return units


def report_sentences(text: str) -> list[str]:
    """The sentences of the diagnostic part of ``text`` (module docstring), in report order."""
    kept = section_report(text or "", SENTENCES_SECTIONING).text
    out: list[str] = []
    pieces: set[str] = set()  # every piece is used once, so every sentence is new
    buf = ""

    def emit(s: str) -> None:
        s = s[:MAX_CHARS].strip()
        if len(s) >= 3:
            out.append(s)

    for unit in _units(kept):
        for part in _SENT.split(unit):
            part = part.strip()
            if not part or part.lower() in pieces:  # a repeated piece (OCR of a repeated line)
                continue
            pieces.add(part.lower())
            buf = f"{buf} {part}".strip()
            if len(buf) >= MIN_CHARS:
                emit(buf)
                buf = ""
    if buf:
        emit(buf)
    return out[:MAX_SENTENCES]
