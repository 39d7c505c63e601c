"""Report sectioning: keep the diagnostic parts of an OCR'd pathology report, drop boilerplate.

A scanned surgical pathology report is mostly not diagnosis: page headers,
patient and billing fields, addresses, legal disclaimers (FDA, CLIA), the
gross description of how specimens were received, inked and cut, and block
or cassette lists.  A small model reads the whole prompt for every token it
writes, so these parts cost time and distract it.

:func:`section_report` walks the lines.  A line that names a section
(``DIAGNOSIS:``, ``Gross Description:``, ``Summary of sections:`` ...) switches
between keeping and dropping.  Kept: final diagnosis, synoptic / CAP
checklist items, staging, microscopic description, comments, clinical
history, and anything under a heading it does not know.  Dropped: gross /
macroscopic description, block and cassette summaries, intraoperative
(frozen section) consultation, special-studies logistics.  Everywhere, single
lines of header fields, page markers, signatures, disclaimers and OCR noise
are dropped.  Inside a dropped section, a line that states a stage, TNM
category, grade or a measured tumour size is kept: a fact must never be lost
to a heading the OCR misplaced.  A report in which no section heading is
recognised is kept whole, less its boilerplate lines.

The result is deterministic; ``SECTIONING_VERSION`` names the rules and is
part of every record's input identity, so changing a rule means a new
version, never a silent change of cached inputs.  Every version stays
available (records keyed by it rebuild the same inputs):

- ``sections-v1``: the rules above;
- ``sections-v2`` (default): v1 plus three rules that keep what v1 lost on the real report
  files (experiments/bench/sectioning.json): "undifferentiated" is a grade fact (v1 dropped a
  frozen-section line "infiltrated by undifferentiated tumour"); a T category that the OCR
  wrote with l for 1 ("pTla", "pTlb") is a fact; a line that starts "differentiated" or
  "grade" keeps the line before it when that line ends in the grade's first word ("moderately
  to poorly", "Glioma, high"), whatever its length (v1 kept only short neighbours).  Of the
  6,861 T categories and grades the rules extractor finds in the full texts, v1 loses 9 and
  v2 loses 1: a UTEROUS grade that the extractor reads only while a dropped UUID line
  separates "Histologic grade (FIGO)3" from "nuclear grade 3)" (its 40-character look-behind
  for "nuclear" crosses the line break).

Imports: the standard library and ``kemm.knowledge.store.inputs`` (TaskInput).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from kemm.knowledge.store.inputs import TaskInput

SECTIONING_VERSION = "sections-v2"
VERSIONS = ("sections-v1", "sections-v2")
NONE = "none"

_HEAD = r"^\s*[\d.()A-Za-z]{0,4}[\s.)\-]*"  # '1.', 'A)', 'Part 2' style prefixes are not part of a heading
_DROP_SECTIONS = re.compile(
    _HEAD + r"(?:gross(?:\s+(?:description|examination|exam))?|macroscopic(?:\s+description)?|"
    r"(?:summary\s+of\s+sections|block\s+summary|section\s+code|cassette\s+(?:summary|key)|ink\s+code|"
    r"submitted\s+as\s+follows|tissue\s+submitted)|"
    r"intra\s?-?\s?operative\s+(?:consultation|consult(?:\s+diagnosis)?|diagnosis)|frozen\s+section(?:\s+diagnosis)?|"
    r"special\s+studies|test\s+description|fda\s+comment|specimens?\s+(?:submitted|received)|specimen\(s\)(?:\s+received)?|"
    r"macroscopy|gross\s+pathology|description\s+of\s+specimens?|processing|block\s+key|blocks?)"
    r"\s*(?:[:\-]|$)",
    re.I,
)
_KEEP_SECTIONS = re.compile(
    _HEAD + r"(?:(?:final|pathologic(?:al)?|surgical|permanent|addendum)?\s*diagnos[ie]s(?:\s+details)?|"
    r"microscopic(?:\s+(?:description|examination|findings))?(?:\s+and\s+comment)?|synoptic|case\s+synopsis|"
    r"(?:pathologic(?:al)?\s+)?stag(?:e|ing)|tumou?r\s+(?:summary|characteristics)|comments?|note|"
    r"clinical\s+(?:history|information|data|diagnosis|details)|history|addendum|cap\s+(?:protocol|checklist)|"
    r"microscopy|summary|conclusion|impression|interpretation)\s*(?:[:\-]|$)",
    re.I,
)
# One-line boilerplate: header fields, page markers, signatures, disclaimers.
_BOILERPLATE = re.compile(
    r"^\s*(?:uuid|tcga-[a-z0-9]{2}-[a-z0-9]{4}\S*|patient(?:\s+name|\s+address)?|name|med\.?\s*rec|mrn|dob|"
    r"date\s+of\s+(?:birth|procedure|receipt|report|service)|date\s+(?:received|reported|ordered|collected)|"
    r"gender|sex|age|account|billing|accession|case\s+number|ref\.?\s*(?:physician|source)|physician\(?s?\)?|"
    r"attending|surgeon|copy\s+to|additional\s+copy|service|location|address|file\s+under|performed\s+by|"
    r"pathologist|electronically\s+signed|signed\s+out|report\s+electronically|page\s*\d|quid|phone|fax)\b[^\n]*$"
    r"|^\s*(?:surgical\s+)?pathology\s+report\s*$|page\s*\d+\s*of\s*\d+|^\s*\*+[^\n]*\*+\s*$",
    re.I,
)
_DISCLAIMER = re.compile(
    r"food\s+and\s+drug|\bfda\b|clia|cleared\s+or\s+approved|performance\s+characteristics|"
    r"investigational|i\s?attest|personal(?:ly)?\s+(?:examination|reviewed)|reviewed\s+and\s+approved|"
    r"high\s+complexity\s+(?:clinical\s+)?laboratory|this\s+(?:test|assay)\s+was\s+developed|redacted|"
    # the TCGA reviewer's checklist stamped on many scans
    r"discre\w*an|hipaa|synchronous|prior\s+malignan|case\s+is\s*[(\[]?\s*circle|reviewer|criteria|"
    r"(?:dis)?qualified|date\s+reviewed",
    re.I,
)
# Facts that keep a line even inside a dropped section.
_FACT = re.compile(
    r"\b(?:y?p)[TNM](?:is|[0-4xX])|\b(?:stage|figo)\s*(?:group|is)?\s*[:\-]?\s*(?:[0-4]|iv|i{1,3})[a-c]?[12]?\b|"
    r"\bgrade\b|\bdifferentiated\b|\bgleason\b|"
    r"(?:tumou?r|mass|lesion|carcinoma|neoplasm)[^\n]{0,60}\d+(?:\.\d+)?\s*(?:x\s*\d+(?:\.\d+)?\s*){0,2}(?:cm|mm)\b|"
    r"\d+(?:\.\d+)?\s*(?:cm|mm)\b[^\n]{0,40}(?:tumou?r|mass|lesion|neoplasm)",
    re.I,
)


# A TNM category anywhere ('T3C/N1/MO', '(T1b2/IB2)', 'T3a1NO'); case-sensitive: 'The' is not T.
_TNM_FACT = re.compile(r"(?<![A-Za-z0-9])(?:y?p|c)?T\s?(?:is|[0-4]|X\b)")  # OCR glues 'T3a1NO': no right edge


# sections-v2: G4 words (\bdifferentiated misses them), and a T/N category whose 1 the OCR read as
# l or I ('pTla', 'pTlb', 'pTlaNO'), which the rules extractor reads as T1a but v1 did not keep.
_FACT_V2 = re.compile(r"(?i:\bundifferentiated\b)|(?<![A-Za-z0-9])y?p[TN][lI](?:[a-c]\d?)?(?![a-z])")


def _fact(line: str, version: str = SECTIONING_VERSION) -> bool:
    if _FACT.search(line) or _TNM_FACT.search(line):
        return True
    return version != "sections-v1" and bool(_FACT_V2.search(line))


_GRADE_TAIL = re.compile(r"\b(?:well|moderately|poorly|high|low|intermediate)(?:\s*(?:to|-)\s*(?:well|moderately|poorly|high|low))?"
                         r"[\s,\-]*$", re.I)


def _continues(line: str, before: str) -> bool:
    """OCR wrapped a grade phrase over two lines: 'moderately to poorly' / 'differentiated.',
    'Glioma, high' / 'grade.'"""
    return line.lstrip(" \t,;-").lower().startswith(("differentiated", "grade")) and bool(_GRADE_TAIL.search(before))


@dataclass(frozen=True)
class SectionedReport:
    """The kept text of one report and what was dropped (for the input meta and audits)."""

    text: str
    version: str
    chars_in: int
    chars_out: int
    headings_found: int


def _noise(line: str) -> bool:
    """OCR noise: barcode strokes ('IIIII 1111 III'), stray symbols, almost no letters."""
    s = line.strip()
    if not s:
        return True
    letters = sum(ch.isalpha() for ch in s)
    if len(s.replace(" ", "")) < 6:
        return False  # 'II', 'III': a grade or stage on its own line, not barcode strokes
    if re.fullmatch(r"[Il1|\s]+", s) or sum(ch in "Il1|i" for ch in s) >= 0.6 * len(s.replace(" ", "")):
        return True  # barcode strokes read as I, l, 1
    return len(s) >= 6 and letters / len(s) < 0.35 and not re.search(r"\d\s*(?:cm|mm)|\d+\s*/\s*\d+", s)


def section_report(text: str, version: str = SECTIONING_VERSION) -> SectionedReport:
    """Keep the diagnostic lines of ``text`` (see the module docstring).

    ``version`` ``"none"`` returns the text unchanged (the identity step).
    """
    if version == NONE:
        return SectionedReport(text, NONE, len(text), len(text), 0)
    if version not in VERSIONS:
        raise ValueError(f"unknown sectioning version {version!r}; known: {', '.join(VERSIONS)}, {NONE}")
    keep_mode = True
    headings = 0
    lines = text.splitlines()
    keep = [False] * len(lines)
    for i, line in enumerate(lines):
        if _DROP_SECTIONS.match(line):
            keep_mode, headings = False, headings + 1
        elif _KEEP_SECTIONS.match(line):
            keep_mode, headings = True, headings + 1
        fact = _fact(line, version)
        if fact:
            # OCR splits 'WHO GRADE:' / 'II' and 'moderately' / 'differentiated' over two lines:
            # a short neighbour of a fact line is kept with it (v2: also the line a fact line continues).
            cont = version != "sections-v1" and i > 0 and _continues(line, lines[i - 1])
            for j in (i - 1, i + 1):
                near = len(lines[j].strip()) <= 40 if 0 <= j < len(lines) else False
                if 0 <= j < len(lines) and (near or (cont and j == i - 1)) and not (
                    _BOILERPLATE.search(lines[j]) or _DISCLAIMER.search(lines[j])
                ):
                    keep[j] = True
        if (_BOILERPLATE.search(line) or _DISCLAIMER.search(line) or _noise(line)) and not fact:
            continue
        keep[i] = keep[i] or keep_mode or fact
    kept = [line.rstrip() for line, k in zip(lines, keep) if k]
    out = "\n".join(kept).strip()
    return SectionedReport(out, version, len(text), len(out), headings)


AUTO = "auto"
LLM_FREE_BACKENDS = ("rules",)


def resolve_version(option: str | None, backend: str) -> str:
    """``--sectioning``: ``auto`` sections for LLM backends and not for the rules extractor
    (which reads the whole report at no cost), else the named version or ``none``."""
    if option in (None, AUTO):
        return NONE if backend in LLM_FREE_BACKENDS else SECTIONING_VERSION
    if option not in (*VERSIONS, NONE):
        raise ValueError(f"--sectioning {option!r}: expected {AUTO}, {', '.join(VERSIONS)} or {NONE}")
    return option


def apply_sectioning(inputs: list[TaskInput], version: str) -> list[TaskInput]:
    """Report inputs with ``report_text`` sectioned and ``sectioning`` = version among the
    prompt variables (so the version is part of every record key).  ``key_text`` stays the
    full report: audits check claims against what the pathologist wrote."""
    if version == NONE:
        return inputs
    out = []
    for inp in inputs:
        if "report_text" not in inp.variables or inp.skip_reason:
            out.append(inp)
            continue
        sec = section_report(inp.variables["report_text"], version)
        meta = {**inp.meta, "sectioning": {"version": sec.version, "chars_in": sec.chars_in,
                                           "chars_out": sec.chars_out, "headings": sec.headings_found}}
        out.append(replace(inp, variables={**inp.variables, "report_text": sec.text, "sectioning": version},
                           meta=meta))
    return out
