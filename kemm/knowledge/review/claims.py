"""Checkable claims of a refined report, and the facts of a source report that support them.

A *claim* is anything in an output that a reader can verify against the report
by looking it up: a number, a size, a node count, a TNM category, a stage
group, a grade.  Free prose ("tumour is aggressive") is not checked here.

Both sides are normalised before comparing:

- OCR spacing inside numbers: ``" 2 .5 cm"`` = ``"2.5 cm"``; decimal commas;
- units: sizes compare in millimetres (``2.5 cm`` = ``25 mm``); in a size
  list (``3.0 x 2.5 x 1.0 cm``) every number carries the unit;
- roman numerals and grade forms: ``grade III`` = ``grade 3`` = ``G3``;
  differentiation words count as grades (well = 1, moderately = 2, poorly = 3,
  undifferentiated = 4);
- TNM prefixes: ``pT2a`` matches ``pT2a``, ``T2a``, ``pT 2a``, ``ypT2a``, and
  OCR'd ``pNO`` = ``pN0``; a less specific claim (``T2``) is supported by a
  more specific statement (``T2a``), never the other way round;
- number words: ``three of fourteen lymph nodes`` supports ``3/14``;
- node totals over stations: a report listing ``3/11``, ``5/10`` ... for several
  lymph-node stations never writes "8 of 21"; a ``nodes_positive`` / ``nodes_examined``
  value found nowhere in the text is supported when it is the *sum* of the stations'
  counts, and that claim is recorded with its own kind ``node_total`` (checked by
  arithmetic, reported apart from counts the text states).

A value ``"not reported"`` is never a claim.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from kemm.knowledge.rules.staging import (
    ANY_TNM_CODE,
    AUDIT_STAGE_CODE,
    DIFFERENTIATION_GRADE,
    GRADE_CODE_RE,
    HIGH_GRADE,
    LOW_GRADE,
    NOT_REPORTED,
    NUMBER_WORDS_TENS,
    ROMAN_OUT,
    canon_tnm,
    ocr_digit,
    roman_or_int,
)

_NUM = r"\d+(?:\s?\.\s?\d+)?"
# Output side (case-sensitive: 'No' is not N0, 'This' is not Tis).
_TNM_COMP_OUT = (
    r"(?:y|r|yp|yc|rp)?[pc]?\s?(?P<l>T|N|M)\s?(?P<v>is|(?<=T)a|(?<=T\s)a|X|x|[0-4](?:[a-d][1-3]?|[A-D](?![a-z]))?)"
    r"(?:\((?:[a-z+\-]+|sn|i[+\-])\))?(?![a-z0-9])"  # 'Malignant' is not 'Ma', 'Tax' is not 'Ta'
)
_TNM_RUN_OUT = re.compile(rf"(?<![A-Za-z0-9])(?:{_TNM_COMP_OUT}[\s,]*){{1,3}}")
_TNM_COMP_OUT_RE = re.compile(_TNM_COMP_OUT)
_STAGE_OUT = re.compile(r"(?i:stage)\s*(?i:group(?:ing)?\s*)?:?\s*(?P<n>IV|III|II|I|0|[1-4])(?P<s>[A-C][1-3]?)?(?![A-Za-z0-9])")
_GRADE_OUT = re.compile(
    r"(?i:grade)\s*[:\-]?\s*(?P<n>IV|III|II|I|[1-4])(?![A-Za-z0-9])|(?<![A-Za-z0-9])G(?P<g>[1-4])(?![A-Za-z0-9])"
)
_GRADE_WORD_OUT = re.compile(r"(?i)\b(?P<w>high|low)[\s-]grade\b")
_SIZE_OUT = re.compile(rf"(?<![\d.])(?P<nums>{_NUM}(?:\s*(?:x|×|by)\s*{_NUM}){{0,2}})\s*(?P<u>cm|mm)\b")
_FRACTION_OUT = re.compile(r"(?<![\d./])(?P<a>\d+)\s*/\s*(?P<b>\d+)(?![\d./])")
_PLAIN_NUM_OUT = re.compile(r"(?<![\d.])\d+(?:\.\d+)?")

# Source side (lower-cased, lenient: finding a fact there only ever supports a claim).
_SRC_TNM_COMP = (
    r"(?:y|r|yp|yc|rp)?(?P<p>[pc])?\s?(?P<l>t|n|m)\s?(?P<v>is|a|x|[0-4oli](?:\s?[a-d][1-3]?)?)(?:\s?\([a-z+\-]+\))?"
    r"(?=$|[^a-z0-9]|[pc]?[nm]\s?[0-4xoli]|g\s?[1-4])"  # 'pt2an0' stays one run; 'margins' is not 'Ma'
)
# OCR'd reports glue grade into the TNM string: ".T3G3 NO" is T3, G3, N0.
_SRC_TNM_RUN = re.compile(rf"(?<![a-z0-9])(?:{_SRC_TNM_COMP}[\s,]*(?:g\s?[1-4](?![0-9])[\s,]*)?){{1,4}}")
_SRC_TNM_COMP_RE = re.compile(_SRC_TNM_COMP)
_SRC_STAGE = re.compile(r"stage\s*(?:\([a-z0-9 ]{1,12}\)\s*)?(?:group(?:ing)?\s*)?[:\-]?\s*(?P<n>iv|iii|ii|i|[0-4])\s?(?P<s>[abc][1-3]?)?(?![a-z0-9])")
_SRC_GRADE = re.compile(
    r"(?:grade|gr\.)\s*[):\-]*\s*(?P<n>iv|iii|ii|i|[1-4])(?![a-z0-9])|(?<![a-z])g\s?(?P<g>[1-4])(?![a-z0-9])"
)
_SRC_DIFF = re.compile(r"\b(well|moderately|poorly|un)[\s-]*differentiated")
_SRC_SIZE = re.compile(r"(?P<nums>\d+(?:\.\d+)?(?:\s*(?:x|by|\*)\s*\d+(?:\.\d+)?)*)\s*(?P<u>cm|mm|centimeters?|centimetres?|millimeters?|millimetres?)\b")
_SRC_NUM = re.compile(r"(?<![\d.])\d+(?:\.\d+)?")
_SRC_NODE_WORD = re.compile(r"\b(?:lymph|nodes?|nodal|ln)\b")
_SRC_FRACTION = re.compile(r"(?<![\d./])(\d{1,3})\s*(?:/|of)\s*(\d{1,3})(?![\d./])")
_SRC_NODES_NEG = re.compile(
    r"\b(?:no|none|negative|free|without|0)\b[^.;\n]{0,80}\b(?:nodes?|nodal)\b|\b(?:nodes?|nodal)\b[^.;\n]{0,80}\b(?:negative|free of|no (?:evidence|metasta|tumou?r|carcinoma))"
)
_GRADE_WORD_SRC = {
    "high": re.compile(r"high[\s-]*grade|grade\s*[:\-]?\s*high"),
    "low": re.compile(r"low[\s-]*grade|grade\s*[:\-]?\s*low"),
}


def _num(s: str) -> float:
    return round(float(re.sub(r"\s", "", s).replace(",", ".")), 4)


def fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def normalize_source(text: str) -> list[str]:
    """Lower-cased variants of a report: as written, and with OCR-split decimals joined.

    Facts are collected from every variant (a union), so joining ``"2. 5"`` can
    never hide the ``2`` and ``5`` of a sentence that really ended there.
    """
    s = unicodedata.normalize("NFKC", text).lower().replace("×", "x")
    s = re.sub(r"[ \t\r\f\v]+", " ", s)
    joined = re.sub(r"(?<=\d) ?[.,] ?(?=\d)", ".", s)
    return [s, joined] if joined != s else [s]


def node_fractions(s: str) -> list[tuple[int, int]]:
    """``a/b`` or ``a of b`` (a <= b) with a lymph-node word within 60 characters: one per station."""
    out = []
    for m in _SRC_FRACTION.finditer(s):
        a, b = int(m.group(1)), int(m.group(2))
        if a <= b and _SRC_NODE_WORD.search(s[max(0, m.start() - 60): m.end() + 60]):
            out.append((a, b))
    return out


@dataclass
class SourceFacts:
    """Everything a claim can be looked up in."""

    numbers: set[float] = field(default_factory=set)
    sizes_mm: set[float] = field(default_factory=set)
    tnm: set[str] = field(default_factory=set)  # canonical, e.g. "T2a", "N0", "Mx" -> "MX"
    stages: set[tuple[str, str]] = field(default_factory=set)  # ("III", "A") / ("II", "")
    grades: set[int] = field(default_factory=set)
    grade_words: set[str] = field(default_factory=set)  # {"high", "low"}
    nodes_negative: bool = False
    node_fractions: list[tuple[int, int]] = field(default_factory=list)  # (positive, examined) per node station

    @classmethod
    def from_text(cls, text: str) -> "SourceFacts":
        f = cls()
        for s in normalize_source(text):
            for m in _SRC_NUM.finditer(s):
                f.numbers.add(_num(m.group()))
            for w, v in NUMBER_WORDS_TENS.items():
                if re.search(rf"\b{w}\b", s):
                    f.numbers.add(float(v))
            for m in _SRC_SIZE.finditer(s):
                mult = 10.0 if m.group("u").startswith("c") else 1.0
                for n in re.findall(r"\d+(?:\.\d+)?", m.group("nums")):
                    f.sizes_mm.add(round(float(n) * mult, 4))
            for run in _SRC_TNM_RUN.finditer(s):
                first = True
                for c in _SRC_TNM_COMP_RE.finditer(run.group()):
                    v = c.group("v").replace(" ", "")  # OCR: 'pT1 b' = pT1b
                    if v[0] in "oli" and v != "is" and not (c.group("p") or not first):
                        first = False
                        continue  # a bare 'no'/'mo'/'ml' is a word, not N0/M0/M1
                    if not (v == "a" and c.group("l") != "t"):
                        # OCR reads 0 as 'o' and 1 as 'l'/'i': 'pNO', 'pTla' = pN0, pT1a
                        v = ocr_digit(v[0]) + v[1:] if v != "is" else v
                        f.tnm.add(canon_tnm(c.group("l"), v))
                    first = False
            for m in _SRC_STAGE.finditer(s):
                f.stages.add((ROMAN_OUT[roman_or_int(m.group("n"))], (m.group("s") or "").upper()))
            for m in _SRC_GRADE.finditer(s):
                f.grades.add(roman_or_int(m.group("n") or m.group("g")))
            for m in _SRC_DIFF.finditer(s):
                f.grades.add(DIFFERENTIATION_GRADE[m.group(1)])
            for w, rx in _GRADE_WORD_SRC.items():
                if rx.search(s):
                    f.grade_words.add(w)
            if _SRC_NODES_NEG.search(s):
                f.nodes_negative = True
        f.node_fractions = node_fractions(normalize_source(text)[0])
        return f

    def node_totals(self) -> tuple[float, float] | None:
        """(sum of positives, sum of examined) over two or more node stations; None otherwise."""
        if len(self.node_fractions) < 2:
            return None
        return float(sum(a for a, _ in self.node_fractions)), float(sum(b for _, b in self.node_fractions))


@dataclass
class Claim:
    kind: str  # tnm | stage | grade | grade_word | size | count | node_total | number
    where: str  # output field, e.g. "pT", "key_statements[2]", "summary"
    start: int
    end: int
    text: str  # the span as written in the output
    value: str  # canonical form that was looked up
    supported: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_claim(c: Claim, f: SourceFacts, payload: Any) -> bool:
    if c.kind == "tnm":
        if c.value in f.tnm:
            return True
        # A less specific claim (T2) is supported by a more specific fact (T2a).
        return len(c.value) == 2 and c.value[1].isdigit() and any(t.startswith(c.value) for t in f.tnm)
    if c.kind == "stage":
        n, s = payload
        return (n, s) in f.stages or (not s and any(sn == n for sn, _ in f.stages))
    if c.kind == "grade":
        return payload in f.grades
    if c.kind == "grade_word":
        return payload in f.grade_words
    if c.kind == "size":
        return all(v in f.sizes_mm for v in payload)
    if c.kind == "count":
        return all((v in f.numbers) or (v == 0 and f.nodes_negative) for v in payload)
    if c.kind == "number":
        return payload in f.numbers
    raise ValueError(f"unknown claim kind {c.kind!r}")


def text_claims(text: str, where: str) -> list[tuple[Claim, Any]]:
    """Claims in one free-text string (a statement, the summary, the histologic type)."""
    out: list[tuple[Claim, Any]] = []
    taken: list[tuple[int, int]] = []

    def free(a: int, b: int) -> bool:
        return all(b <= s or a >= e for s, e in taken)

    def add(kind: str, a: int, b: int, value: str, payload: Any) -> None:
        out.append((Claim(kind, where, a, b, text[a:b], value), payload))
        taken.append((a, b))

    for m in _STAGE_OUT.finditer(text):
        n = ROMAN_OUT[roman_or_int(m.group("n"))]
        s = (m.group("s") or "").upper()
        add("stage", m.start("n"), m.end(), f"stage {n}{s}", (n, s))
    for run in _TNM_RUN_OUT.finditer(text):
        for c in _TNM_COMP_OUT_RE.finditer(run.group()):
            a, b = run.start() + c.start(), run.start() + c.end()
            a += len(c.group()) - len(c.group().lstrip())
            if free(a, b):
                add("tnm", a, b, canon_tnm(c.group("l"), c.group("v")), None)
    for m in _GRADE_OUT.finditer(text):
        if free(m.start(), m.end()):
            g = roman_or_int(m.group("n") or m.group("g"))
            add("grade", m.start(), m.end(), f"grade {g}", g)
    for m in _GRADE_WORD_OUT.finditer(text):
        if free(m.start(), m.end()):
            add("grade_word", m.start(), m.end(), f"{m.group('w').lower()} grade", m.group("w").lower())
    for m in _SIZE_OUT.finditer(text):
        if free(m.start(), m.end()):
            mult = 10.0 if m.group("u") == "cm" else 1.0
            nums = re.findall(r"\d+(?:\s?\.\s?\d+)?", m.group("nums"))
            vals = tuple(round(_num(n) * mult, 4) for n in nums)
            add("size", m.start(), m.end(), " x ".join(fmt_num(_num(n)) for n in nums) + " " + m.group("u"), vals)
    for m in _FRACTION_OUT.finditer(text):
        if free(m.start(), m.end()):
            vals = (float(m.group("a")), float(m.group("b")))
            add("count", m.start(), m.end(), f"{m.group('a')}/{m.group('b')}", vals)
    for m in _PLAIN_NUM_OUT.finditer(text):
        if free(m.start(), m.end()):
            v = _num(m.group())
            add("number", m.start(), m.end(), fmt_num(v), v)
    out.sort(key=lambda cp: cp[0].start)
    return out


def field_claims(output: dict[str, Any]) -> list[tuple[Claim, Any]]:
    """Claims of a RefinedReport dict: structured fields, then free text."""
    out: list[tuple[Claim, Any]] = []

    def nr(v: Any) -> bool:
        return v is None or (isinstance(v, str) and v.strip().lower() in (NOT_REPORTED, ""))

    for fld in ("pT", "pN", "pM"):
        v = output.get(fld)
        if not nr(v):
            m = ANY_TNM_CODE.fullmatch(str(v))
            if m:
                out.append((Claim("tnm", fld, 0, len(v), v, canon_tnm(m.group(1), m.group(2))), None))
    v = output.get("stage_group")
    if not nr(v):
        m = AUDIT_STAGE_CODE.fullmatch(str(v))
        if m:
            n, s = m.group(1), (m.group(2) or "").upper()
            out.append((Claim("stage", "stage_group", 0, len(v), v, f"stage {n}{s}"), (n, s)))
    v = output.get("grade")
    if not nr(v):
        m = GRADE_CODE_RE.fullmatch(str(v))
        if m:
            out.append((Claim("grade", "grade", 0, len(v), v, f"grade {m.group(1)}"), int(m.group(1))))
        elif str(v) in (HIGH_GRADE, LOW_GRADE):
            w = str(v).split()[0]
            out.append((Claim("grade_word", "grade", 0, len(v), v, f"{w} grade"), w))
    v = output.get("tumor_size")
    if not nr(v):
        m = re.fullmatch(r"(\d+(?:\.\d+)?) (cm|mm)", str(v))
        if m:
            mm = round(float(m.group(1)) * (10.0 if m.group(2) == "cm" else 1.0), 4)
            out.append((Claim("size", "tumor_size", 0, len(v), v, v), (mm,)))
    for fld in ("nodes_positive", "nodes_examined"):
        v = output.get(fld)
        if isinstance(v, int) and not isinstance(v, bool):
            out.append((Claim("count", fld, 0, len(str(v)), str(v), str(v)), (float(v),)))
    if not nr(output.get("histologic_type")):
        out += text_claims(str(output["histologic_type"]), "histologic_type")
    for i, s in enumerate(output.get("key_statements") or []):
        out += text_claims(str(s), f"key_statements[{i}]")
    if output.get("summary"):
        out += text_claims(str(output["summary"]), "summary")
    return out


def _is_node_total(c: Claim, payload: Any, totals: tuple[float, float]) -> bool:
    """The station sums: a field's count (positive / examined), a statement's ``a/b`` or a bare number."""
    if c.kind == "count" and c.where == "nodes_positive":
        return payload == (totals[0],)
    if c.kind == "count" and c.where == "nodes_examined":
        return payload == (totals[1],)
    if c.kind == "count":
        return tuple(payload) == totals
    if c.kind == "number":
        return payload in totals
    return False


def check_output(output: dict[str, Any], source_text: str, facts: SourceFacts | None = None) -> list[Claim]:
    """Every claim of ``output`` with ``supported`` set against ``source_text``."""
    facts = facts or SourceFacts.from_text(source_text)
    claims = []
    totals = facts.node_totals()
    for c, payload in field_claims(output):
        c.supported = check_claim(c, facts, payload)
        if not c.supported and totals is not None and _is_node_total(c, payload, totals):
            c.kind, c.supported = "node_total", True  # a derived total, verified by arithmetic
        claims.append(c)
    return claims
