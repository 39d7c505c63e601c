"""The one clinical vocabulary of the knowledge half: staging and grading codes, number
words, differentiation -> grade, and the field lists of a refined report.

Every module that reads or writes TNM categories, stage groups or grades takes its
vocabulary from here: the schema (``generate.schemas``), the rules extractor, the importer
of published LLM outputs, the audit's claim checker, the diff and the numeric covariates.
Where their leniency differs on purpose, the variants are named here:

- **schema codes** (``PT_CODE``, ``PN_CODE``, ``PM_CODE``, ``STAGE_GROUP_CODE``): what a
  valid ``RefinedReport`` holds; the importer accepts a parsed code only when it matches;
- **audit codes** (``ANY_TNM_CODE``, ``AUDIT_STAGE_CODE``): what the claim checker reads
  back out of an output, a little wider than the schema so that a claim is never missed;
- **OCR digits** (``OCR_DIGIT``): the extractor's and the audit's reading of ``l``/``I``/``O``
  in codes (``pTla`` = ``T1a``, ``pNO`` = ``N0``).

Imports: the standard library only (this module is the bottom of the knowledge half).
"""
from __future__ import annotations

import re

NOT_REPORTED = "not reported"

# -- roman numerals and number words -----------------------------------------------------
ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4}
ROMAN_OUT = {0: "0", 1: "I", 2: "II", 3: "III", 4: "IV"}
ROMAN_ALTERNATION = "IV|III|II|I"  # longest first, for regexes
OCR_DIGIT = {"l": "1", "I": "1", "i": "1", "|": "1", "O": "0", "o": "0"}
NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
# The audit also reads tens ("forty lymph nodes"); the extractor counts nodes up to twenty in words.
NUMBER_WORDS_TENS = {**NUMBER_WORDS, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
                     "eighty": 80, "ninety": 90}


def roman_or_int(token: str) -> int:
    """``"III"``/``"iii"``/``"3"`` -> 3 (ValueError for anything else)."""
    t = token.strip().upper()
    return ROMAN[t] if t in ROMAN else int(t)


def ocr_digit(ch: str) -> str:
    """One character of a code as OCR read it: ``l``/``I``/``|`` -> 1, ``O``/``o`` -> 0."""
    return OCR_DIGIT.get(ch, ch)


# -- grade ---------------------------------------------------------------------------------
LOW_GRADE, HIGH_GRADE = "low grade", "high grade"
DIFFERENTIATION_GRADE = {"well": 1, "moderately": 2, "poorly": 3, "un": 4}  # "un" = undifferentiated
# What a two-tier grade counts as on the G1-G4 scale (numeric covariates only).
TWO_TIER_GRADE = {LOW_GRADE: 1.0, HIGH_GRADE: 3.0}


def grade_code(n: int) -> str:
    """1..4 -> ``"G1"``..``"G4"``."""
    return f"G{n}"


# -- TNM and stage group: schema codes ----------------------------------------------------
# AJCC 7th/8th edition categories without the y/p/c prefix; 'X' = cannot be assessed.
PT_CODE = r"T(X|0|is|a|[1-4][a-d]?[1-3]?)"
PN_CODE = r"N(X|0|[1-3][a-c]?)"
PM_CODE = r"M(X|0|1[a-d]?)"
STAGE_GROUP_CODE = r"(0|0a|0is|I|II|III|IV)[A-C]?[1-3]?"
PT_RE, PN_RE, PM_RE = (re.compile(rf"^{c}$") for c in (PT_CODE, PN_CODE, PM_CODE))
TNM_FIELDS = {"T": "pT", "N": "pN", "M": "pM"}
TNM_CODE_RE = {"T": PT_RE, "N": PN_RE, "M": PM_RE}

# -- audit codes: read back out of an output (a little wider than the schema) ---------------
ANY_TNM_CODE = re.compile(r"([TNM])(is|a|X|[0-4][a-d]?[1-3]?)")
AUDIT_STAGE_CODE = re.compile(r"(0|IV|III|II|I)([A-C][1-3]?|a|is)?")
GRADE_CODE_RE = re.compile(r"G([1-4])")


def canon_tnm(letter: str, value: str) -> str:
    """Canonical category for comparison: ``("t", "2A")`` -> ``T2a``, ``("m", "x")`` -> ``MX``."""
    letter = letter.upper()
    v = value.strip()
    if v.lower() == "is":
        return letter + "is"
    if v.lower() in ("x", "a"):
        return letter + v.upper() if v.lower() == "x" else letter + "a"
    return letter + v[0] + v[1:].lower()


# -- numbers of codes (covariates) ---------------------------------------------------------
_STAGE_LEAD = re.compile(r"^(0|IV|III|II|I)")


def stage_number(code: str) -> int | None:
    """Stage group code -> 0..4 (``"IIIA"`` -> 3); None when not a stage group."""
    m = _STAGE_LEAD.match(str(code))
    if not m:
        return None
    return 0 if m.group(1) == "0" else ROMAN[m.group(1)]


def tnm_number(code: str, letter: str) -> int | None:
    """Category code -> its number (``"T2a"`` -> 2, ``"Tis"``/``"Ta"`` -> 0); None for X or no code."""
    m = re.match(rf"^{letter}(is|a|X|\d)", str(code))
    if not m or m.group(1) == "X":
        return None
    return 0 if m.group(1) in ("is", "a") else int(m.group(1))


def grade_number(code: str) -> float | None:
    """Grade code -> number (``"G3"`` -> 3, two-tier grades as ``TWO_TIER_GRADE``); None otherwise."""
    code = str(code)
    if code.startswith("G") and code[1:].isdigit():
        return float(code[1:])
    return TWO_TIER_GRADE.get(code)


# -- fields of a refined report ------------------------------------------------------------
REFINED_FIELDS = (
    "histologic_type", "grade", "pT", "pN", "pM", "stage_group", "tumor_size", "nodes_positive",
    "nodes_examined", "margin_status", "lymphovascular_invasion", "perineural_invasion",
)
# Fields a diff compares: the structured ones, with pT also at the number level.
DIFF_FIELDS = (
    "histologic_type", "grade", "pT", "pT_number", "pN", "pM", "stage_group", "tumor_size",
    "nodes_positive", "nodes_examined", "margin_status", "lymphovascular_invasion", "perineural_invasion",
)
CATEGORICAL_FIELDS = (
    "grade", "pT", "pT_number", "pN", "pM", "stage_group", "margin_status",
    "lymphovascular_invasion", "perineural_invasion",
)
CODE_FIELDS = ("pT", "pN", "pM", "stage_group", "grade")  # compared as written, case kept
