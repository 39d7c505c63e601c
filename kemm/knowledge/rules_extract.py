"""Deterministic, LLM-free extraction of a ``RefinedReport`` from pathology report text.

The extractor reads OCR'd surgical pathology reports (the tcga-path-report
files) and fills every field it can find stated in the text; everything else is
``"not reported"``.  It never infers a value the report does not state: codes
are normalised (``pTla`` -> ``T1a``, ``pNO`` -> ``N0``, ``grade III`` -> ``G3``),
never derived from other findings (a Gleason score is not turned into a G grade,
a glioblastoma is not given WHO grade IV unless the report says so).

Every field keeps the verbatim snippet it came from (``Extraction.evidence``), so
an audit can check that each number and code is supported by the source.

Choices made where reports are ambiguous, kept simple and defensible:

- **T/N/M**: staging-context matches (after "stage", "TNM", "(pT)") beat other
  ``pT`` tokens, which beat unprefixed ``T3 N1`` strings; earliest wins within a
  class (the final diagnosis precedes comments and addenda).
- **Grade**: most specific system first (FIGO / WHO / Nottingham / Fuhrman /
  "histologic grade:"), then "grade N" and G codes next to the word grade, then
  differentiation words, then "high/low grade" (not PIN, dysplasia or SIL).
  Gleason patterns and scores are never read as a grade.
- **Nodes**: an explicit total (``Number of lymph nodes examined: 14``,
  ``pN0 (0/37)``, ``Total nodes = 2``) wins; otherwise the per-station counts
  (``(0/7)``, ``three of nine lymph nodes``) are summed, a count repeated right
  next to itself (``1 of 3 lymph nodes (1/3)``) counted once.
- **Margins**: any positive mention -> positive, else any close -> close, else
  negative; ``R0``/``R1`` residual codes count too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kemm.knowledge.schemas import NOT_REPORTED, RefinedReport

NR = NOT_REPORTED
NOTHING_FOUND = "No prognostic findings were extracted from the report."

# --------------------------------------------------------------------------- helpers

_WS = re.compile(r"\s+")
_OCR_DIGIT = {"l": "1", "I": "1", "i": "1", "|": "1", "O": "0", "o": "0"}
_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4}
_ROMAN_OUT = {1: "I", 2: "II", 3: "III", 4: "IV"}
_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_WORD_NUM = r"(?:\d{1,3}|" + "|".join(sorted(_WORDS, key=len, reverse=True)) + r")"


def _num(tok: str) -> int | None:
    tok = tok.strip().lower()
    if tok.isdigit():
        return int(tok)
    return _WORDS.get(tok)


def _ocr_digit(ch: str) -> str:
    return _OCR_DIGIT.get(ch, ch)


def _roman_or_digit(tok: str) -> int | None:
    tok = tok.strip()
    if tok.isdigit():
        return int(tok)
    t = tok.upper().replace("L", "I")
    return _ROMAN.get(t)


def _sentence_start(text: str, pos: int, limit: int) -> int:
    """Start of the clause containing ``pos``, at most ``limit`` chars back."""
    lo = max(0, pos - limit)
    window = text[lo:pos]
    cut = max(window.rfind(". "), window.rfind("; "), window.rfind(": -"))
    return lo + cut + 2 if cut >= 0 else lo


def _windows(low: str, keys: re.Pattern, before: int, after: int) -> list[tuple[int, int]]:
    """Merged spans around every match of ``keys``: the expensive patterns run only there."""
    spans: list[tuple[int, int]] = []
    for m in keys.finditer(low):
        lo, hi = max(0, m.start() - before), min(len(low), m.end() + after)
        if spans and lo <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(hi, spans[-1][1]))
        else:
            spans.append((lo, hi))
    return spans


def _finditer_in(rx: re.Pattern, low: str, spans: list[tuple[int, int]]):
    for lo, hi in spans:
        yield from rx.finditer(low, lo, hi)


def _search_in(rx: re.Pattern, low: str, spans: list[tuple[int, int]]) -> re.Match | None:
    for lo, hi in spans:
        m = rx.search(low, lo, hi)
        if m:
            return m
    return None


# --------------------------------------------------------------------------- result


@dataclass
class Extraction:
    """Extracted values plus the verbatim snippet each came from."""

    histologic_type: str = NR
    grade: str = NR
    grade_phrase: str = ""
    t_prefix: str = ""
    pT: str = NR
    pN: str = NR
    pM: str = NR
    stage_group: str = NR
    tumor_size: str = NR
    nodes_positive: int | str = NR
    nodes_examined: int | str = NR
    nodes_summed: bool = False  # counts add up several stations (the totals are not written as such)
    margin_status: str = NR
    lymphovascular_invasion: str = NR
    perineural_invasion: str = NR
    gleason: str = ""
    evidence: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, snippet: str) -> None:
        self.evidence.setdefault(name, []).append(snippet)


# --------------------------------------------------------------------------- TNM

_T_RE = re.compile(
    r"(?<![A-Za-z0-9])(?P<prefix>y\s?p|[pP]|y|c)?\s?T\s?"
    r"(?:(?P<spec>is|X|x)|(?P<num>[0-4lIiO|])(?:\s?(?P<sub>[a-dA-D])[1-3lI]?)?|(?P<ta>a))"
    r"(?=$|[^A-Za-z]|[pP]?N|\s?N)"
)
_N_AFTER = re.compile(
    r"[\s,;/.:]{0,4}(?:[pPcy]\s?)?N\s?(?P<n>[0-3OoXxlI])(?:\s?(?P<sub>[a-cA-C])(?![a-zA-Z]))?(?=$|[^A-Za-z]|[pP]?M|\s?M)"
)
_M_AFTER = re.compile(r"[\s,;/.:]{0,4}(?:[pPc]\s?)?M\s?(?P<m>[01OoXx])(?:\s?(?P<sub>[a-dA-D]))?(?![A-Za-z0-9])")
_N_ALONE = re.compile(
    r"(?<![A-Za-z0-9])[pP]\s?N\s?(?P<n>[0-3OXx])(?:\s?(?P<sub>[a-cA-C]))?(?![A-Za-z0-9])"
)
_M_ALONE = re.compile(r"(?<![A-Za-z0-9])[pP]\s?M\s?(?P<m>[01OXx])(?:\s?(?P<sub>[a-dA-D]))?(?![A-Za-z0-9])")
_STAGE_CTX = re.compile(r"stag|tnm|\(pt\)|primary\s+tumou?r|ajcc")


def _norm_t(m: re.Match) -> str:
    if m.group("spec"):
        return "Tis" if m.group("spec") == "is" else "TX"
    if m.group("ta"):
        return "Ta"
    num = _ocr_digit(m.group("num"))
    sub = (m.group("sub") or "").lower()
    if num == "0":
        return "T0"
    return f"T{num}{sub}"


def _norm_n(m: re.Match) -> str:
    n = m.group("n")
    if n in "Xx":
        return "NX"
    n = _ocr_digit(n)
    sub = (m.group("sub") or "").lower()
    return "N0" if n == "0" else f"N{n}{sub}"


def _norm_m(m: re.Match) -> str:
    v = m.group("m")
    if v in "Xx":
        return "MX"
    v = _ocr_digit(v)
    sub = (m.group("sub") or "").lower()
    return "M0" if v == "0" else f"M1{sub}"


_DEFINITION_AFTER = re.compile(r"\s*:\s*[A-Za-z]")
_HISTORY_BEFORE = re.compile(r"(?:previous|prior|history|recurren)[^.;]{0,30}$")


def _extract_tnm(flat: str, ex: Extraction) -> None:
    cands: list[tuple[int, int, re.Match, bool]] = []  # (priority, pos, match, is_definition)
    for m in _T_RE.finditer(flat):
        prefix = (m.group("prefix") or "").replace(" ", "")
        n_follow = _N_AFTER.match(flat, m.end())
        if not prefix and not n_follow:
            continue  # a bare "T2" is a block label or MRI sequence, not a stage
        if prefix == "c":
            continue  # clinical stage is not the pathologic stage
        if not prefix and not (m.group("num") or "X").isdigit() and m.group("spec") not in ("X", "is"):
            continue  # "TO NO", "Tl N..." without a prefix are more often words than stages
        ctx = flat[max(0, m.start() - 40) : m.start()].lower()
        prio = 0 if _STAGE_CTX.search(ctx) else (1 if prefix else 2)
        if _HISTORY_BEFORE.search(ctx):
            prio = 3
        cands.append((prio, m.start(), m, bool(_DEFINITION_AFTER.match(flat, m.end()))))
    # CAP checklists that list every option ("pTX: Cannot be assessed pT1: Solitary
    # tumor ...") say nothing about this tumour: drop the option lines
    if len({_norm_t(c[2]) for c in cands if c[3]}) >= 3:
        cands = [c for c in cands if not c[3]]
    best = None
    if cands:
        top = min(c[0] for c in cands)
        pool = [c for c in cands if c[0] == top]
        # "pTis, T2b N0 MX": the invasive component sets the T category
        invasive = [c for c in pool if _norm_t(c[2])[1:2].isdigit()]
        best = min(invasive or pool, key=lambda c: c[1])
    if best is not None:
        m = best[2]
        ex.pT = _norm_t(m)
        ex.t_prefix = "y" if (m.group("prefix") or "").startswith("y") else ""
        end = m.end()
        snippet_end = end
        nm = _N_AFTER.match(flat, end)
        if nm:
            ex.pN = _norm_n(nm)
            end = snippet_end = nm.end()
            mm = _M_AFTER.match(flat, end)
            if mm:
                ex.pM = _norm_m(mm)
                snippet_end = mm.end()
        ex.add("pT", flat[m.start() : snippet_end].strip())
    if ex.pN == NR:
        m = _first_in_context(_N_ALONE, flat)
        if m:
            ex.pN = _norm_n(m)
            ex.add("pN", m.group(0).strip())
    if ex.pM == NR:
        m = _first_in_context(_M_ALONE, flat)
        if m:
            ex.pM = _norm_m(m)
            ex.add("pM", m.group(0).strip())


def _first_in_context(rx: re.Pattern, flat: str) -> re.Match | None:
    first = None
    for m in rx.finditer(flat):
        if _STAGE_CTX.search(flat[max(0, m.start() - 60) : m.start()].lower()):
            return m
        first = first or m
    return first


# --------------------------------------------------------------------------- stage group

_STAGE_RE = re.compile(
    r"(?i:stage)(?:\s*(?i:group(?:ing)?))?\s*(?:\([^)]{0,30}\)\s*)?(?i:is\s+)?[:\-]?\s*"
    r"(?:(?:AJCC|FIGO|TNM)\s*)?(?P<g>IV|III|II|I|0is|0a|0)(?P<l>[ABCabc])?(?P<d>[1-3])?(?![A-Za-z0-9])"
)


def _extract_stage(flat: str, ex: Extraction) -> None:
    m = _STAGE_RE.search(flat)
    if m:
        ex.stage_group = m.group("g") + (m.group("l") or "").upper() + (m.group("d") or "")
        ex.add("stage_group", m.group(0).strip())


# --------------------------------------------------------------------------- grade

_GRADE_WORD = re.compile(r"\bgrade\b")  # run on the lower-cased text
_GRADE_SYS_BEFORE = re.compile(
    r"(?P<sys>figo|who|nottingham|fuhrman|isup|edmondson(?:[\s-]+(?:and\s+)?steiner)?|histologic(?:al)?|"
    r"overall|combined|tumou?r)(?:\s+(?:histologic(?:al)?|nuclear|nottingham))?\s*(?:\([^)]{0,25}\)\s*)?$"
)
# after the word "grade" (case-sensitive: roman numerals are upper case)
_GRADE_VALUE_AFTER = re.compile(
    r"\s*(?:\([^)]{0,25}\))?[\s:;,=\-]*(?:\(?\s*[Gg]rade\s*)?(?:[Gg]\s?)?"
    r"(?P<v>[1-4]|IV|III|II|I|Ill|Il)(?![A-Za-z0-9+]|\.\d|\s*\+|\s*-\s*[1-4IV])"
)
_DIFF = re.compile(
    r"\b(?P<w>well|moderately(?:\s+to\s+poorly|\s*-\s*poorly)?|poorly|un)\s*-?\s*differentiated"
)
_HL_GRADE = re.compile(r"\b(?P<w>high|low)\s*[-.]?\s*grade\b(?!\s*(?:and|to|or)\b)")
_HL_EXCLUDE = re.compile(
    r"[\s,]*(?:\w+\s+){0,2}?(?:dysplas|pin\b|prostatic|intra-?\s?epithelial|squamous\s+intraepithelial|sil\b|"
    r"component|area|focus|foci|lymph)"
)
_TENTATIVE = re.compile(r"(?:probabl|possibl|favou?r|suspicious|suggest|rule\s+out|previous|prior|history)[^.;]{0,25}$")
_GRADE_EXCLUDE_BEFORE = re.compile(
    r"(?:gleason|pattern|nuclear|architectur|budding|fibrosis|hepatitis|inflammat|activity|dysplasia|"
    r"\bpin\b|intraepithelial|group|intensity|staining|previous|prior|history|tertiary|primary|secondary|"
    r"component|minor)[^.;]{0,25}$"
)
_GRADE_EXCLUDE_AFTER = re.compile(r"\s*(?:\(?of\s+4\)?\s*)?(?:activity|inflammation|fibrosis|dysplasia|\+)")
_DIFF_MAP = {"well": "G1", "moderately": "G2", "poorly": "G3", "un": "G4"}
_SYS_LABEL = {"figo": "FIGO", "who": "WHO", "isup": "ISUP", "fuhrman": "Fuhrman", "nottingham": "Nottingham"}
_SYS_SPECIFIC = ("figo", "who", "isup", "fuhrman", "nottingham", "edmondson", "histolog")


def _grade_phrase(sys: str, v: str) -> str:
    """A clean, verbatim-supported phrase: 'FIGO grade 3', 'WHO grade IV', 'grade 2'."""
    v = v.strip()
    if not v.isdigit():
        v = v.upper().replace("L", "I")
    if sys.startswith("edmondson"):
        label = "Edmondson-Steiner"
    elif sys.startswith("histolog"):
        label = "histologic"
    else:
        label = _SYS_LABEL.get(sys, "")
    return f"{label} grade {v}".strip()


def _grade_from_val(v: str) -> str | None:
    n = _roman_or_digit(v)
    return f"G{n}" if n and 1 <= n <= 4 else None


def _extract_grade(flat: str, low: str, ex: Extraction) -> None:
    cands: list[tuple[int, int, str, str, str]] = []  # (priority, pos, grade, phrase, evidence)
    for m in _GRADE_WORD.finditer(low):
        before = low[max(0, m.start() - 40) : m.start()]
        if _GRADE_EXCLUDE_BEFORE.search(before) or _GRADE_EXCLUDE_AFTER.match(low, m.end()):
            continue
        v = _GRADE_VALUE_AFTER.match(flat, m.end())
        if not v:
            continue
        g = _grade_from_val(v.group("v"))
        if not g:
            continue
        sm = _GRADE_SYS_BEFORE.search(before)
        sys = sm.group("sys") if sm else ""
        start = m.start() - (len(before) - sm.start()) if sm else m.start()
        prio = 0 if sys.startswith(_SYS_SPECIFIC) else 1
        cands.append((prio, start, g, _grade_phrase(sys, v.group("v")), flat[start : v.end()]))
    for m in _DIFF.finditer(low):
        if _TENTATIVE.search(low[max(0, m.start() - 30) : m.start()]):
            continue
        w = m.group("w")
        key = "poorly" if w.startswith("moderately") and "poorly" in w else w.split()[0]
        cands.append((2, m.start(), _DIFF_MAP[key], m.group(0).replace(" - ", "-"), flat[m.start() : m.end()]))
    for m in _HL_GRADE.finditer(low):
        if _HL_EXCLUDE.match(low, m.end()):
            continue
        before = low[max(0, m.start() - 30) : m.start()]
        if re.search(r"(?:with|without|no|negative for|and|or)\s*$", before) or _TENTATIVE.search(before):
            continue  # "with low grade and high grade components", "no high grade dysplasia", "probable low grade"
        cands.append((3, m.start(), f"{m.group('w')} grade", f"{m.group('w')} grade", flat[m.start() : m.end()]))
    if cands:
        _, _, g, phrase, evidence = min(cands, key=lambda c: (c[0], c[1]))
        ex.grade = g
        ex.grade_phrase = phrase
        ex.add("grade", evidence)


# --------------------------------------------------------------------------- Gleason

_GLEASON = re.compile(
    r"gleason[^0-9]{0,30}?(?P<a>[1-5])\s*\+\s*(?P<b>[1-5])(?:\s*=\s*(?P<s>\d{1,2}))?"
    r"|gleason[^0-9]{0,20}?score\s*[:=]?\s*(?P<s2>\d{1,2})\s*\(\s*(?P<a2>[1-5])\s*\+\s*(?P<b2>[1-5])\s*\)"
)


def _extract_gleason(flat: str, low: str, ex: Extraction) -> None:
    m = _GLEASON.search(low)
    if not m:
        return
    if m.group("a"):
        a, b, s = m.group("a"), m.group("b"), m.group("s")
    else:
        a, b, s = m.group("a2"), m.group("b2"), m.group("s2")
    if s and int(s) != int(a) + int(b):
        s = None  # OCR noise ("3+4=71"): keep only the patterns, which are legible
    ex.gleason = f"Gleason score {s} ({a}+{b})" if s else f"Gleason pattern {a}+{b}"
    ex.add("gleason", flat[m.start() : m.end()])


# --------------------------------------------------------------------------- histology

# (canonical name, pattern, tier): tier 0 = specific type, 1 = generic / in situ.
_HISTOLOGY: list[tuple[str, str, int]] = [
    ("glioblastoma", r"glio\s?blastoma(?:\s*m\s?ultiforme)?", 0),
    ("gliosarcoma", r"gliosarcoma", 0),
    ("anaplastic oligoastrocytoma", r"anaplastic\s+oligo-?astrocytoma", 0),
    ("oligoastrocytoma", r"oligo-?astrocytoma", 0),
    ("anaplastic oligodendroglioma", r"anaplastic\s+oligodendroglioma", 0),
    ("oligodendroglioma", r"oligodendroglioma", 0),
    ("anaplastic astrocytoma", r"anaplastic\s+astrocytoma", 0),
    ("diffuse astrocytoma", r"diffuse\s+astrocytoma", 0),
    ("fibrillary astrocytoma", r"fibrillary\s+astrocytoma", 0),
    ("pilocytic astrocytoma", r"pilocytic\s+astrocytoma", 0),
    ("astrocytoma", r"astrocytoma", 0),
    ("glioma", r"glioma", 1),
    ("urothelial carcinoma", r"urothelial\s+(?:cell\s+)?carcinoma", 0),
    ("transitional cell carcinoma", r"transitional\s+cell\s+carcinoma", 0),
    ("invasive ductal carcinoma", r"(?:invasive|infiltrating)\s+ductal\s+carcinoma", 0),
    ("invasive lobular carcinoma", r"(?:invasive|infiltrating)\s+lobular\s+carcinoma", 0),
    ("invasive mammary carcinoma", r"(?:invasive|infiltrating)\s+mammary\s+carcinoma", 0),
    ("ductal carcinoma in situ", r"ductal\s+carcinoma\s+in[\s-]+situ", 1),
    ("endometrioid adenocarcinoma", r"endometrioid\s+(?:type\s+)?adenocarcinoma", 0),
    ("endometrioid carcinoma", r"endometrioid\s+carcinoma", 0),
    ("papillary serous carcinoma", r"papillary\s+serous\s+(?:adeno)?carcinoma", 0),
    ("serous carcinoma", r"serous\s+(?:adeno)?carcinoma", 0),
    ("clear cell renal cell carcinoma", r"clear\s+cell\s+(?:type\s+)?renal\s+cell\s+carcinoma", 0),
    ("papillary renal cell carcinoma", r"papillary\s+renal\s+cell\s+carcinoma", 0),
    ("chromophobe renal cell carcinoma", r"chromophobe\s+renal\s+cell\s+carcinoma", 0),
    ("renal cell carcinoma", r"renal\s+cell\s+carcinoma", 0),
    ("clear cell carcinoma", r"clear\s+cell\s+(?:adeno)?carcinoma", 0),
    ("carcinosarcoma", r"carcinosarcoma", 0),
    ("malignant mixed mullerian tumor", r"malignant\s+mixed\s+m[uü]ll?erian\s+tumou?r", 0),
    ("hepatocellular carcinoma", r"hepatocellular\s+carcinoma", 0),
    ("cholangiocarcinoma", r"cholangiocarcinoma", 0),
    ("basaloid squamous cell carcinoma", r"basaloid\s+squamous\s+(?:cell\s+)?carcinoma", 0),
    ("adenosquamous carcinoma", r"adenosquamous\s+carcinoma", 0),
    ("squamous cell carcinoma", r"squamous\s+(?:cell\s+)?carcinoma", 0),
    ("verrucous carcinoma", r"verrucous\s+carcinoma", 0),
    ("large cell neuroendocrine carcinoma", r"large\s+cell\s+neuroendocrine\s+carcinoma", 0),
    ("small cell carcinoma", r"small\s+cell\s+(?:lung\s+)?carcinoma", 0),
    ("large cell carcinoma", r"large\s+cell\s+carcinoma", 0),
    ("neuroendocrine carcinoma", r"neuroendocrine\s+carcinoma", 0),
    ("bronchioloalveolar carcinoma", r"bronchiolo-?alveolar\s+carcinoma", 0),
    ("signet ring cell carcinoma", r"signet[\s-]+ring\s+cell\s+(?:adeno)?carcinoma", 0),
    ("mucinous adenocarcinoma", r"mucinous\s+adenocarcinoma", 0),
    ("mucinous carcinoma", r"mucinous\s+carcinoma", 0),
    ("ductal adenocarcinoma", r"ductal\s+adenocarcinoma", 0),
    ("acinar cell carcinoma", r"acinar\s+cell\s+carcinoma", 0),
    ("acinar adenocarcinoma", r"acinar\s+(?:type\s+)?adenocarcinoma", 0),
    ("adenoid basal carcinoma", r"adenoid\s+basal\s+carcinoma", 0),
    ("adenoid cystic carcinoma", r"adenoid\s+cystic\s+carcinoma", 0),
    ("undifferentiated carcinoma", r"undifferentiated\s+carcinoma", 0),
    ("adenocarcinoma", r"adeno\s?carcinoma", 0),
    ("leiomyosarcoma", r"leiomyosarcoma", 0),
    ("malignant melanoma", r"malignant\s+melanoma", 0),
    ("melanoma", r"melanoma", 0),
    ("carcinoid tumor", r"carcinoid\s+tumou?r", 1),
]
_HIST_RE = re.compile(
    r"\b(?:" + "|".join(f"(?P<h{i}>{p})" for i, (_, p, _) in enumerate(_HISTOLOGY)) + r")(?![a-z])"
)
_HIST_NEG = re.compile(
    r"(?:negative\s+for|no\s+evidence\s+of|no\s+residual|free\s+of|without|rule\s+out|r/o|"
    r"history\s+of|\bno\b|absence\s+of|not\s+identified|suspicious\s+for)"
    r"[^.;:]{0,40}$"
)
_HIST_LABEL = re.compile(r"(?:histologic(?:al)?\s+type|tumou?r\s+type|histology)\s*[:\-]")


# Every vocabulary entry contains one of these heads; scanning for heads first
# and matching the vocabulary only around them keeps extraction fast.
_HIST_HEADS = re.compile(r"carcinoma|glioma|blastoma|astrocytoma|melanoma|sarcoma|m[uü]ll?erian|carcinoid")
_HIST_TIER = {n: t for n, _, t in _HISTOLOGY}


def _extract_histology(flat: str, low: str, ex: Extraction) -> None:
    found: dict[str, list[int]] = {}
    labelled: tuple[int, str, str] | None = None
    label_ends = [m.end() for m in _HIST_LABEL.finditer(low)]
    scanned = 0
    for h in _HIST_HEADS.finditer(low):
        if h.start() < scanned:
            continue
        for m in _HIST_RE.finditer(low, max(scanned, h.start() - 50), min(len(low), h.end() + 15)):
            if m.end() <= h.start():
                continue
            scanned = m.end()
            idx = next(i for i, v in enumerate(m.groups()) if v is not None)
            name = _HISTOLOGY[idx][0]
            if labelled is None and any(0 <= m.start() - e <= 100 for e in label_ends):
                labelled = (m.start(), name, flat[m.start() : m.end()])
            elif _HIST_NEG.search(low[max(0, m.start() - 60) : m.start()]):
                break
            found.setdefault(name, []).append(m.start())
            break
    if labelled is not None:
        ex.histologic_type = labelled[1]
        ex.add("histologic_type", labelled[2])
        return
    if not found:
        return
    counts = {n: len(p) for n, p in found.items()}
    # a generic name nested at the end of a specific one ("adenocarcinoma" in
    # "endometrioid adenocarcinoma") counts for the specific one
    for gen in list(counts):
        for spec in counts:
            if spec != gen and spec.endswith(" " + gen) and counts[gen]:
                counts[spec] += counts[gen]
                counts[gen] = 0
    best_tier = min(_HIST_TIER[n] for n, c in counts.items() if c > 0)
    pool = [n for n, c in counts.items() if c > 0 and _HIST_TIER[n] == best_tier]
    name = max(pool, key=lambda n: (counts[n], -found[n][0]))
    ex.histologic_type = name
    pos = found[name][0]
    m = _HIST_RE.match(low, pos)
    ex.add("histologic_type", flat[pos : m.end() if m else pos + len(name)])


# --------------------------------------------------------------------------- size

_NUM = r"\d{1,3}(?:\.\d{1,2})?(?![\d.]\d)"
_UNIT = r"(?:cm|mm|em|ern|crn)\.?(?![a-z])"
_DIMS = re.compile(
    rf"(?P<d1>{_NUM})\s*(?P<u1>{_UNIT})?(?:\s*[x×]\s*(?P<d2>{_NUM})\s*(?P<u2>{_UNIT})?)?"
    rf"(?:\s*[x×]\s*(?P<d3>{_NUM})\s*(?P<u3>{_UNIT})?)?"
)
_GAP = (
    r"[\s:,;=\-]*(?:(?:up\s+to|approximately|approx\.?|about|at\s+least|overall|is|of|measuring|measures|"
    r"(?:greatest|maxim(?:al|um)|largest)\s+(?:dimension|diameter)|diameter|dimension)[\s:,;=\-]*){0,3}"
)
_SIZE_LABELLED = re.compile(
    r"(?:\b(?:tumou?r|mass|lesion|neoplasm)\s+(?:size|dimension|diameter)s?(?:\s*\([^)]{0,40}\))?"
    r"|\b(?:maxim(?:al|um)|greatest|largest)\s+tumou?r\s+(?:dimension|diameter|size))" + _GAP
)
_SIZE_MEASURES = re.compile(
    r"\b(?:tumou?r|mass|lesion)(?:\s+[a-z]+){0,2}?\s+(?:measures|measuring|measured)" + _GAP
)


def _parse_dims(low: str, pos: int) -> tuple[str, int] | None:
    m = _DIMS.match(low, pos)
    if not m:
        return None
    units = [m.group(u) for u in ("u1", "u2", "u3") if m.group(u)]
    if not units:
        return None
    unit = "mm" if units[-1].startswith("mm") else "cm"
    dims = [m.group(d) for d in ("d1", "d2", "d3") if m.group(d)]
    best = max(dims, key=float)
    if float(best) <= 0:
        return None
    return f"{best} {unit}", m.end()


def _extract_size(flat: str, low: str, ex: Extraction) -> None:
    for rx in (_SIZE_LABELLED, _SIZE_MEASURES):
        for m in rx.finditer(low):
            got = _parse_dims(low, m.end())
            if got:
                ex.tumor_size = got[0]
                ex.add("tumor_size", flat[m.start() : got[1]])
                return


# --------------------------------------------------------------------------- nodes

_NODE_WORD = r"(?:lymph\s*)?(?:nodes?|lns?)\b"
_EXAMINED = re.compile(
    r"(?:(?:total\s+)?(?:number|no\.?|#)\s*(?:of\s*)?(?:regional\s*)?(?:lymph\s*)?nodes?\s*"
    r"(?:examined|identified|recovered|evaluated|retrieved|submitted)"
    r"|(?:lymph\s*)?nodes?\s*(?:examined|recovered|retrieved)(?:\s*\(\w+\))?"
    r"|number\s+examined|total\s+(?:number\s+of\s+)?(?:lymph\s*)?nodes?(?:\s+(?:examined|identified))?)"
    r"\s*(?:is|=|:|-)?\s*(?P<n>\d{1,3})(?![\d/]|\.\d)"
)
_POSITIVE = re.compile(
    r"(?:(?:total\s+)?(?:number|no\.?|#)\s*(?:of\s*)?(?:regional\s*)?(?:lymph\s*)?nodes?\s*"
    r"(?:involved|positive|with\s+metasta\w*)"
    r"|(?:lymph\s*)?nodes?\s*(?:involved|positive)(?:\s*\(\w+\))?|number\s+involved"
    r"|(?:number|total)\s+(?:of\s+)?positive\s+(?:lymph\s*)?nodes?|positive\s+(?:lymph\s*)?nodes?)"
    r"\s*(?:is|=|:|-)?\s*(?P<n>\d{1,3})(?![\d/]|\.\d)"
)
_PN_COUNT = re.compile(r"(?<![A-Za-z])p?N\s?[0-3OXx][a-c]?\s*[\(\{\[]\s*(?P<p>\d{1,3})\s*/\s*(?P<e>\d{1,3})\s*[\)\}\]]")
_TOTAL_SLASH = re.compile(
    r"(?:lymph\s*nodes?(?:\s+count)?|total\s+lymph\s+node\s+count|nodes)\s*[:=]\s*(?P<p>\d{1,3})\s*/\s*(?P<e>\d{1,3})(?![\d/])"
)
_SLASH = re.compile(r"(?<![\d/.])[\(\{\[]\s*(?P<p>\d{1,3})\s*/\s*(?P<e>\d{1,3})\s*[\)\}\]lI1]?(?![\d/])")
_OF = re.compile(
    rf"\b(?P<p>{_WORD_NUM})\s+(?:out\s+)?of\s+(?P<e>{_WORD_NUM})\s+(?:[a-z]+\s+){{0,3}}?{_NODE_WORD}"
)
_NODE_CTX = re.compile(r"node|\bln\b")
_NODE_KEYS = re.compile(r"node|number|examined|involved")


def _extract_nodes(flat: str, low: str, ex: Extraction) -> None:
    m = _PN_COUNT.search(flat) or _TOTAL_SLASH.search(low)
    if m:
        p, e = int(m.group("p")), int(m.group("e"))
        if p <= e:
            ex.nodes_positive, ex.nodes_examined = p, e
            ex.add("nodes_total", flat[m.start() : m.end()])
            return
    spans = _windows(low, _NODE_KEYS, 60, 60)
    me = _search_in(_EXAMINED, low, spans)
    mp = _search_in(_POSITIVE, low, spans)
    if me:
        ex.nodes_examined = int(me.group("n"))
        ex.add("nodes_total", flat[me.start() : me.end()])
    if mp and (not me or int(mp.group("n")) <= int(me.group("n"))):
        ex.nodes_positive = int(mp.group("n"))
        ex.add("nodes_total", flat[mp.start() : mp.end()])
    if me and mp:
        return
    # per-station counts
    stations: list[tuple[int, int, int, str]] = []  # (pos, positive, examined, snippet)
    for m in _SLASH.finditer(flat):
        p, e = int(m.group("p")), int(m.group("e"))
        if e == 0 or p > e:
            continue
        before = low[_sentence_start(low, m.start(), 120) : m.start()]
        after = low[m.end() : m.end() + 25]
        if _NODE_CTX.search(before) or _NODE_CTX.search(after):
            stations.append((m.start(), p, e, m.group(0)))
    for m in _OF.finditer(low):
        p, e = _num(m.group("p")), _num(m.group("e"))
        if p is None or e is None or e == 0 or p > e:
            continue
        # "1 of 3 lymph nodes (1/3)": the same count written twice
        if any(0 <= s[0] - m.end() <= 40 and (s[1], s[2]) == (p, e) for s in stations):
            continue
        stations.append((m.start(), p, e, flat[m.start() : m.end()]))
    if not stations:
        return
    tp = sum(s[1] for s in stations)
    te = sum(s[2] for s in stations)
    if me is None and mp is None:
        ex.nodes_positive, ex.nodes_examined = tp, te
    elif me is not None and mp is None and te == ex.nodes_examined:
        ex.nodes_positive = tp  # the stations add up to the stated total: their positives are complete
    elif mp is not None and me is None and tp == ex.nodes_positive:
        ex.nodes_examined = te
    else:
        return
    ex.nodes_summed = len(stations) > 1
    for st in sorted(stations):
        ex.add("nodes", st[3])


# --------------------------------------------------------------------------- margins

_MARGIN_LABEL = re.compile(r"\bmargins?(?:\s+status)?(?:\s*\([^)]{0,30}\))?\s*[:\-]\s*(?P<v>[^.;]{0,80})")
_POS_WORD = re.compile(r"(?<!not )(?<!non)\b(?:positive|involved|tumou?r\s+(?:at|extends\s+to))\b")
_CLOSE_WORD = re.compile(r"\bclose\b")
_NEG_WORD = re.compile(
    r"\b(?:negative|free|uninvolved|not\s+involved|clear|no\s+(?:tumou?r|carcinoma|malignancy|neoplasm)|"
    r"widely\s+(?:negative|free|clear))\b"
)
_MARGIN_FREE = [
    (re.compile(r"margins?(?:\s+of\s+resection)?[^.;:]{0,40}?\b(?:are|is)\s+(?:all\s+|also\s+)?(?:free|negative|uninvolved|clear|not\s+involved)"), "negative"),
    (re.compile(r"\b(?:negative|free|uninvolved|clear)\s+(?:\w+\s+){0,2}?margins?\b"), "negative"),
    (re.compile(r"(?<!not )\b(?:extends?|extending)\s+to\s+(?:the\s+)?(?:\w+\s+){0,3}?margins?\b"), "positive"),
    (re.compile(r"margins?[^.;:]{0,40}?\b(?:are|is)\s+(?:focally\s+)?(?:positive|involved)\b"), "positive"),
    (re.compile(r"(?<!not )\b(?:positive|involved)\s+(?:\w+\s+){0,2}?margins?\b"), "positive"),
    (re.compile(r"\bclose\s+(?:\w+\s+){0,2}?margins?\b|margins?\s+(?:are|is)\s+close\b"), "close"),
]
_MARGIN_KEY = re.compile(r"margin")
_RESIDUAL = re.compile(r"(?<![A-Za-z0-9])R(?P<r>[012X])(?![A-Za-z0-9])")


def _margin_from_value(v: str) -> str | None:
    # checklist lines often list options; read only the start of the value
    v = v[:60]
    neg = _NEG_WORD.search(v)
    pos = _POS_WORD.search(v)
    close = _CLOSE_WORD.search(v)
    if pos and (not neg or pos.start() < neg.start()):
        return "positive"
    if close:
        return "close"
    if neg:
        return "negative"
    return None


def _extract_margins(flat: str, low: str, ex: Extraction) -> None:
    found: list[tuple[str, str]] = []
    spans = _windows(low, _MARGIN_KEY, 90, 130)
    for m in _finditer_in(_MARGIN_LABEL, low, spans):
        st = _margin_from_value(m.group("v"))
        if st:
            found.append((st, flat[m.start() : min(m.end(), m.start() + 100)]))
    for rx, st in _MARGIN_FREE:
        for m in _finditer_in(rx, low, spans):
            found.append((st, flat[m.start() : m.end()]))
    if not found and ex.evidence.get("pT"):
        # residual tumour code next to the TNM string: "pT3 pN0 (0/37) L0 V0 R0"
        t_snip = ex.evidence["pT"][0]
        i = flat.find(t_snip)
        m = _RESIDUAL.search(flat, i, i + len(t_snip) + 40) if i >= 0 else None
        if m and m.group("r") != "X":
            found.append(("negative" if m.group("r") == "0" else "positive", m.group(0)))
    if not found:
        return
    for st in ("positive", "close", "negative"):
        hits = [s for k, s in found if k == st]
        if hits:
            ex.margin_status = st
            ex.add("margin_status", hits[0])
            return


# --------------------------------------------------------------------------- LVI / PNI

_LVI_TERM = (
    r"(?:lympho-?\s?vascular(?:\s+space)?|lymph-?\s?vascular|angio-?\s?lymphatic|lymphatic(?:\s*/\s*vascular)?|"
    r"(?:small|large)\s+vessel|vascular(?:\s*/\s*lymphatic)?|venous(?:\s*/\s*lymphatic)?|vessel|lvsi|lvi)"
)
_PNI_TERM = r"(?:peri-?\s?neural|perineurial|pni)"
_CONJ = (
    r"(?:\s*(?:,|/|or|and)\s*(?:peri-?\s?neural|lympho-?\s?vascular|angio-?\s?lymphatic|vascular|lymphatic|venous))?"
)
_INV = _CONJ + r"(?:\s+(?:\([^)]{0,40}\)\s*)?(?:invasion|infiltration|involvement|spread)|(?=\s*[:(]))"
_LVI_RE = re.compile(rf"\b{_LVI_TERM}{_INV}(?:\s*\([^)]{{0,20}}\))?")
_PNI_RE = re.compile(rf"\b{_PNI_TERM}{_INV}(?:\s*\([^)]{{0,20}}\))?")
_ABSENT_AFTER = re.compile(
    r"^\s*(?:is\s+|are\s+)?[:\-]?\s*(?:not\s+(?:identified|seen|present|detected|appreciated|found)|absent|negative|none|no\b|nil)"
)
_PRESENT_AFTER = re.compile(
    r"^\s*(?:is\s+|are\s+)?[:\-]?\s*(?:(?:is\s+)?present|identified|positive|seen|yes\b|focal|extensive|prominent|noted)"
)
_LABEL_AFTER = re.compile(r"\s*[:\-]")
_NEG_BEFORE = re.compile(r"(?:\bno\b|\bnot\b|without|negative\s+for|absence\s+of|free\s+of)[^.;:]{0,50}$")
_POS_BEFORE = re.compile(r"(?:\bwith\b|shows?|showing|presence\s+of|positive\s+for|extensive|focal|prominent)[^.;:]{0,25}$")
_UNCERTAIN = re.compile(r"(?:suspicious|indeterminate|cannot\s+be\s+(?:determined|assessed)|equivocal|evaluate)")


def _presence(flat: str, low: str, rx: re.Pattern, name: str, ex: Extraction) -> str:
    verdicts: list[tuple[str, str]] = []
    for m in rx.finditer(low):
        after = low[m.end() : m.end() + 40]
        b0 = _sentence_start(low, m.start(), 60)
        before = low[b0 : m.start()]
        if _UNCERTAIN.search(before[-25:]) or _UNCERTAIN.match(after.strip()[:20]):
            continue
        labelled = _LABEL_AFTER.match(after) is not None  # "LVI: present" states its own value
        if not labelled and _NEG_BEFORE.search(before):  # "no lymphovascular invasion is identified"
            verdicts.append(("absent", flat[max(b0, m.start() - 30) : m.end()]))
        elif _ABSENT_AFTER.match(after):
            verdicts.append(("absent", flat[m.start() : m.end() + 20]))
        elif _PRESENT_AFTER.match(after):
            verdicts.append(("present", flat[m.start() : m.end() + 20]))
        elif _POS_BEFORE.search(before):
            verdicts.append(("present", flat[max(b0, m.start() - 20) : m.end()]))
    for st in ("present", "absent"):
        hits = [s for k, s in verdicts if k == st]
        if hits:
            ex.add(name, _WS.sub(" ", hits[0]).strip())
            return st
    return NR


# --------------------------------------------------------------------------- statements


def _stage_string(ex: Extraction) -> str:
    parts = []
    if ex.pT != NR:
        parts.append(("yp" if ex.t_prefix == "y" else "p") + ex.pT)
    if ex.pN != NR:
        parts.append(ex.pN)
    if ex.pM != NR:
        parts.append(ex.pM)
    return " ".join(parts)


def _statements(ex: Extraction) -> list[str]:
    out: list[str] = []
    if ex.histologic_type != NR:
        s = ex.histologic_type[0].upper() + ex.histologic_type[1:]
        if ex.grade_phrase:
            s += f", {ex.grade_phrase}"
        out.append(s + ".")
    elif ex.grade_phrase:
        out.append(f"Tumour grade: {ex.grade_phrase}.")
    tnm = _stage_string(ex)
    if tnm and ex.stage_group != NR:
        out.append(f"Pathologic stage {tnm} (stage {ex.stage_group}).")
    elif tnm:
        out.append(f"Pathologic stage {tnm}.")
    elif ex.stage_group != NR:
        out.append(f"Stage {ex.stage_group}.")
    if ex.tumor_size != NR:
        out.append(f"Tumour size {ex.tumor_size} in greatest dimension.")
    if isinstance(ex.nodes_positive, int) and isinstance(ex.nodes_examined, int):
        out.append(f"{ex.nodes_positive} of {ex.nodes_examined} lymph nodes positive.")
    elif isinstance(ex.nodes_examined, int):
        out.append(f"{ex.nodes_examined} lymph nodes examined.")
    elif isinstance(ex.nodes_positive, int):
        out.append(f"{ex.nodes_positive} positive lymph nodes.")
    if ex.margin_status != NR:
        out.append(f"Margins {ex.margin_status}.")
    for label, v in (("Lymphovascular invasion", ex.lymphovascular_invasion), ("Perineural invasion", ex.perineural_invasion)):
        if v == "present":
            out.append(f"{label} present.")
        elif v == "absent":
            out.append(f"No {label.lower()}.")
    if ex.gleason:
        out.append(ex.gleason + ".")
    return out[:8]


def _summary(ex: Extraction) -> str:
    bits: list[str] = []
    if ex.histologic_type != NR:
        bits.append(ex.histologic_type[0].upper() + ex.histologic_type[1:])
    if ex.grade_phrase:
        bits.append(ex.grade_phrase)
    if ex.gleason:
        bits.append(ex.gleason)
    tnm = _stage_string(ex)
    if tnm:
        bits.append(("pathologic stage " if not bits else "") + tnm)
    if ex.stage_group != NR:
        bits.append(f"stage {ex.stage_group}")
    if ex.tumor_size != NR:
        bits.append(f"tumour size {ex.tumor_size}")
    if isinstance(ex.nodes_positive, int) and isinstance(ex.nodes_examined, int):
        bits.append(f"{ex.nodes_positive}/{ex.nodes_examined} lymph nodes positive")
    if ex.margin_status != NR:
        bits.append(f"margins {ex.margin_status}")
    if ex.lymphovascular_invasion != NR:
        bits.append(f"lymphovascular invasion {ex.lymphovascular_invasion}")
    if ex.perineural_invasion != NR:
        bits.append(f"perineural invasion {ex.perineural_invasion}")
    if not bits:
        return NOTHING_FOUND
    s = ", ".join(bits) + "."
    return s[0].upper() + s[1:]


# --------------------------------------------------------------------------- entry points


def extract(text: str) -> Extraction:
    """All fields with their evidence; ``extract_report`` wraps this into the schema."""
    flat = _WS.sub(" ", text or "")
    low = flat.lower()  # same length and offsets as ``flat``; most patterns run on it
    if len(low) != len(flat):  # a few code points change length when lower-cased
        low = "".join(c.lower() if len(c.lower()) == 1 else c for c in flat)
    ex = Extraction()
    _extract_tnm(flat, ex)
    _extract_stage(flat, ex)
    _extract_grade(flat, low, ex)
    _extract_gleason(flat, low, ex)
    _extract_histology(flat, low, ex)
    _extract_size(flat, low, ex)
    _extract_nodes(flat, low, ex)
    _extract_margins(flat, low, ex)
    ex.lymphovascular_invasion = _presence(flat, low, _LVI_RE, "lymphovascular_invasion", ex)
    ex.perineural_invasion = _presence(flat, low, _PNI_RE, "perineural_invasion", ex)
    return ex


def to_report(ex: Extraction) -> RefinedReport:
    data: dict[str, Any] = {
        "histologic_type": ex.histologic_type,
        "grade": ex.grade,
        "pT": ex.pT,
        "pN": ex.pN,
        "pM": ex.pM,
        "stage_group": ex.stage_group,
        "tumor_size": ex.tumor_size,
        "nodes_positive": ex.nodes_positive,
        "nodes_examined": ex.nodes_examined,
        "margin_status": ex.margin_status,
        "lymphovascular_invasion": ex.lymphovascular_invasion,
        "perineural_invasion": ex.perineural_invasion,
        "key_statements": _statements(ex),
        "summary": _summary(ex)[:600],
    }
    return RefinedReport.model_validate(data)


def extract_report(text: str) -> RefinedReport:
    """Fill a ``RefinedReport`` from report text, deterministically."""
    return to_report(extract(text))
