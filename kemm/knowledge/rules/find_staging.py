"""Rules finders for staging: TNM categories, stage group, grade and Gleason score.

Each ``extract_*`` reads the whitespace-flattened report (``flat``; ``low`` is its
lower-cased twin with the same offsets) and fills an :class:`Extraction` in place.
See :mod:`kemm.knowledge.rules.extract` for the choices made where reports are ambiguous.

Imports: ``rules.staging`` and ``rules.extraction`` only.
"""
from __future__ import annotations

import re

from kemm.knowledge.rules.extraction import NR, Extraction, roman_or_digit
from kemm.knowledge.rules.staging import DIFFERENTIATION_GRADE, grade_code, ocr_digit

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
    num = ocr_digit(m.group("num"))
    sub = (m.group("sub") or "").lower()
    if num == "0":
        return "T0"
    return f"T{num}{sub}"


def _norm_n(m: re.Match) -> str:
    n = m.group("n")
    if n in "Xx":
        return "NX"
    n = ocr_digit(n)
    sub = (m.group("sub") or "").lower()
    return "N0" if n == "0" else f"N{n}{sub}"


def _norm_m(m: re.Match) -> str:
    v = m.group("m")
    if v in "Xx":
        return "MX"
    v = ocr_digit(v)
    sub = (m.group("sub") or "").lower()
    return "M0" if v == "0" else f"M1{sub}"


_DEFINITION_AFTER = re.compile(r"\s*:\s*[A-Za-z]")
_HISTORY_BEFORE = re.compile(r"(?:previous|prior|history|recurren)[^.;]{0,30}$")


def extract_tnm(flat: str, ex: Extraction) -> None:
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


def extract_stage(flat: str, ex: Extraction) -> None:
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
    n = roman_or_digit(v)
    return grade_code(n) if n and 1 <= n <= 4 else None


def extract_grade(flat: str, low: str, ex: Extraction) -> None:
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
        cands.append((2, m.start(), grade_code(DIFFERENTIATION_GRADE[key]), m.group(0).replace(" - ", "-"), flat[m.start() : m.end()]))
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


def extract_gleason(flat: str, low: str, ex: Extraction) -> None:
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


