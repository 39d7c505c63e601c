"""Rules finders for the tumour: histologic type, size, lymph nodes, margins, LVI and PNI.

Each ``extract_*`` reads the whitespace-flattened report (``flat``; ``low`` is its
lower-cased twin with the same offsets) and fills an :class:`Extraction` in place.

Imports: ``rules.extraction`` only.
"""
from __future__ import annotations

import re

from kemm.knowledge.rules.extraction import (
    NR,
    WORD_NUM,
    WS,
    Extraction,
    finditer_in,
    search_in,
    sentence_start,
    windows,
    word_number,
)

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


def extract_histology(flat: str, low: str, ex: Extraction) -> None:
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


def extract_size(flat: str, low: str, ex: Extraction) -> None:
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
    rf"\b(?P<p>{WORD_NUM})\s+(?:out\s+)?of\s+(?P<e>{WORD_NUM})\s+(?:[a-z]+\s+){{0,3}}?{_NODE_WORD}"
)
_NODE_CTX = re.compile(r"node|\bln\b")
_NODE_KEYS = re.compile(r"node|number|examined|involved")


def extract_nodes(flat: str, low: str, ex: Extraction) -> None:
    m = _PN_COUNT.search(flat) or _TOTAL_SLASH.search(low)
    if m:
        p, e = int(m.group("p")), int(m.group("e"))
        if p <= e:
            ex.nodes_positive, ex.nodes_examined = p, e
            ex.add("nodes_total", flat[m.start() : m.end()])
            return
    spans = windows(low, _NODE_KEYS, 60, 60)
    me = search_in(_EXAMINED, low, spans)
    mp = search_in(_POSITIVE, low, spans)
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
        before = low[sentence_start(low, m.start(), 120) : m.start()]
        after = low[m.end() : m.end() + 25]
        if _NODE_CTX.search(before) or _NODE_CTX.search(after):
            stations.append((m.start(), p, e, m.group(0)))
    for m in _OF.finditer(low):
        p, e = word_number(m.group("p")), word_number(m.group("e"))
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


def extract_margins(flat: str, low: str, ex: Extraction) -> None:
    found: list[tuple[str, str]] = []
    spans = windows(low, _MARGIN_KEY, 90, 130)
    for m in finditer_in(_MARGIN_LABEL, low, spans):
        st = _margin_from_value(m.group("v"))
        if st:
            found.append((st, flat[m.start() : min(m.end(), m.start() + 100)]))
    for rx, st in _MARGIN_FREE:
        for m in finditer_in(rx, low, spans):
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
LVI_RE = re.compile(rf"\b{_LVI_TERM}{_INV}(?:\s*\([^)]{{0,20}}\))?")
PNI_RE = re.compile(rf"\b{_PNI_TERM}{_INV}(?:\s*\([^)]{{0,20}}\))?")
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


def presence(flat: str, low: str, rx: re.Pattern, name: str, ex: Extraction) -> str:
    verdicts: list[tuple[str, str]] = []
    for m in rx.finditer(low):
        after = low[m.end() : m.end() + 40]
        b0 = sentence_start(low, m.start(), 60)
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
            ex.add(name, WS.sub(" ", hits[0]).strip())
            return st
    return NR


