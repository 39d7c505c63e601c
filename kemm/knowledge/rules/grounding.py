"""PBK grounded in the patient: which prognostic factors of a cancer type a refined report activates.

A ``PrognosticFactor`` is matched to a patient's validated ``RefinedReport`` by a rule table
keyed on the factor's NAME (the statement is read only for thresholds it states, such as
"(pT2 or higher)", "(pN2)", "larger than 5 cm", "at least 12 lymph nodes", because statements
mention other concepts in passing: "lymphovascular invasion is associated with nodal spread").
The first rule whose pattern matches the name decides:

==========================  =====================================================================
rule (name matches)         active when (False when the report states the opposite, else None)
==========================  =====================================================================
category molecular,         never groundable from a pathology report -> None
clinical, microenvironment
not groundable names        extranodal extension, Gleason, residual disease, pleural or stromal
                            invasion, necrosis, ulceration, mitoses, satellites, budding,
                            extent of resection -> None (no schema field carries them)
nodes examined              nodes_examined >= N ("at least N"), N from the text, else None
node + distant metastasis   node rule OR pM >= 1
distant metastasis          pM >= 1 (False for pM0)
lymphovascular + perineural LVI present OR PNI present
node / nodal                pN >= k or nodes_positive > 0 (k from "(pN2)", "(pN1-pN3)", default 1)
lymphovascular / vascular   lymphovascular_invasion present
perineural                  perineural_invasion present
margin / complete resection margin positive (or close when the text says "close"); a favourable
                            "complete resection" factor is active for negative margins
histology names             histologic_type contains a histology term the factor names
                            (serous, sarcomatoid, signet ring, ...): True or None, never False
grade / differentiation     grade G3, G4 or "high grade" (False for G1, G2, "low grade")
size with a stated cutoff   tumour size > cutoff; else the extent rule when the text names pT
stage                       stage >= III; without a stage, the extent rule
extent (invasion, extension,pT >= threshold ("(pT2 or higher)", "(pT3-pT4)", "(pT3b)"; default
depth, thickness, size, pT) pT3); subcategories compare as T3a < T3b < T4
==========================  =====================================================================

Compound factors ("X or Y") are active when any part is, inactive only when every part is.
The patient's risk level (low / intermediate / high) comes from the stage group, or from
pT/pN/pM when no stage is reported (see :func:`risk_level`).

``GROUNDING_VERSION`` changes whenever a rule changes; derived sources record it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel

from kemm.knowledge.rules.covariates import encode_report
from kemm.knowledge.generate.schemas import PrognosticFactor, RefinedReport

GROUNDING_VERSION = "grounding-v2"  # v2: a "distant metastasis" factor alone is grounded by pM

Verdict = bool | None
_UNGROUNDABLE_CATEGORIES = {"molecular", "clinical", "microenvironment"}
_NOT_GROUNDABLE = re.compile(
    r"extranodal|gleason|residual disease|pleural|stromal invasion|necrosis|ulceration|mitotic|"
    r"satellite|budding|extent of resection|performance"
)
_HISTOLOGY_TERMS = (
    "micropapillary", "plasmacytoid", "sarcomatoid", "small cell", "rhabdoid", "serous", "clear cell",
    "carcinosarcoma", "glioblastoma", "signet ring", "diffuse-type", "poorly cohesive", "cribriform", "intraductal",
)


@dataclass(frozen=True)
class Patient:
    """The report's fields as numbers (``kemm.knowledge.covariates``; NaN = not reported) plus text."""

    num: dict[str, float]
    pt_code: str  # "T3b", "not reported", ...
    histologic_type: str

    def known(self, key: str) -> bool:
        v = self.num[key]
        return v == v


def _patient(report: RefinedReport | BaseModel | dict[str, Any]) -> Patient:
    if isinstance(report, BaseModel):
        report = report.model_dump(mode="json")
    out = RefinedReport.model_validate(report).model_dump(mode="json")
    return Patient(encode_report(out), out["pT"], out["histologic_type"].lower())


# --------------------------------------------------------------------------- single concepts
def _any(*vs: Verdict) -> Verdict:
    """OR of verdicts: True if any is, False only if all are, else unknown."""
    if any(v is True for v in vs):
        return True
    return False if vs and all(v is False for v in vs) else None


def _pt_ordinal(code: str) -> float | None:
    """T3b -> 3.2, T3 -> 3.0, Ta/Tis -> 0 (subcategories order within a category)."""
    m = re.match(r"^p?T(is|a|\d)([a-d]?)", code)
    if not m:
        return None
    if m.group(1) in ("is", "a"):
        return 0.0
    return int(m.group(1)) + (" abcd".index(m.group(2)) / 10 if m.group(2) else 0.0)


def _pt_threshold(text: str) -> float:
    """The lowest pT the factor's text names ("(pT2 or higher)", "(pT3-pT4)", "(pT3b)"), else pT3."""
    codes = [o for c in re.findall(r"\bpT(\d[a-d]?)", text) if (o := _pt_ordinal("T" + c)) is not None]
    return min(codes) if codes else 3.0


def extent(p: Patient, text: str) -> Verdict:
    here = _pt_ordinal(p.pt_code)
    return None if here is None else here >= _pt_threshold(text)


def nodes(p: Patient, text: str) -> Verdict:
    ks = [int(k) for k in re.findall(r"\bpN(\d)", text)]
    k = min(ks) if ks else 1
    by_pn = p.num["pN"] >= k if p.known("pN") else None
    by_count = None
    if p.known("nodes_positive"):
        # No positive node rules out any pN >= 1; a positive count says node-positive but not
        # which pN subcategory, so it decides only a "pN1 or higher" factor.
        by_count = False if p.num["nodes_positive"] == 0 else (True if k <= 1 else None)
    return _known_any(by_pn, by_count)


def _known_any(*vs: Verdict) -> Verdict:
    """OR over the verdicts that are known (positive evidence wins a conflict); None if none is."""
    known = [v for v in vs if v is not None]
    return any(known) if known else None


def distant(p: Patient) -> Verdict:
    return p.num["pM"] >= 1 if p.known("pM") else None


def presence(p: Patient, key: str) -> Verdict:
    return bool(p.num[key] >= 1) if p.known(key) else None


def margin(p: Patient, text: str, favourable: bool) -> Verdict:
    if not p.known("margin"):
        return None
    m = p.num["margin"]  # 1 positive, 0.5 close, 0 negative
    if favourable:  # "complete resection with negative margins"
        return m == 0
    return m >= (0.5 if re.search(r"\bclose\b", text) else 1.0)


def grade(p: Patient) -> Verdict:
    return p.num["grade"] >= 3 if p.known("grade") else None


def stage(p: Patient, text: str) -> Verdict:
    return p.num["stage"] >= 3 if p.known("stage") else extent(p, text)


def size(p: Patient, text: str) -> Verdict:
    m = re.search(r"(?:larger|greater|more) than (\d+(?:\.\d+)?) ?cm", text)
    if m and p.known("tumor_size"):
        return p.num["tumor_size"] > float(m.group(1))
    return extent(p, text) if re.search(r"\bpT\b|higher pT", text) else None


def histology(p: Patient, text: str) -> Verdict:
    named = [t for t in _HISTOLOGY_TERMS if t in text.lower()]
    return True if any(t in p.histologic_type for t in named) else None


def nodes_examined(p: Patient, text: str) -> Verdict:
    m = re.search(r"at least (\d+) (?:lymph )?nodes", text)
    if not m or not p.known("nodes_examined"):
        return None
    return p.num["nodes_examined"] >= int(m.group(1))


# --------------------------------------------------------------------------- the rule table
Rule = tuple[str, str, Callable[[Patient, str, PrognosticFactor], Verdict]]
RULES: tuple[Rule, ...] = (
    ("not-groundable", _NOT_GROUNDABLE.pattern, lambda p, t, f: None),
    ("nodes-examined", r"nodes examined", lambda p, t, f: nodes_examined(p, t)),
    ("node+distant", r"node.*distant|distant.*node", lambda p, t, f: _any(nodes(p, t), distant(p))),
    ("lvi+pni", r"lymphovascular and perineural", lambda p, t, f: _any(presence(p, "lvi"), presence(p, "pni"))),
    ("node", r"\bnod(?:e|es|al)\b", lambda p, t, f: nodes(p, t)),
    ("distant", r"distant metasta", lambda p, t, f: distant(p)),
    ("lvi", r"lymphovascular|vascular invasion", lambda p, t, f: presence(p, "lvi")),
    ("pni", r"perineural", lambda p, t, f: presence(p, "pni")),
    ("margin", r"margin|complete resection", lambda p, t, f: margin(p, t, f.direction == "favourable")),
    ("histology", r"histology\b|sarcomatoid|rhabdoid|cribriform|intraductal|variant",
     lambda p, t, f: None if f.direction == "context-dependent" else histology(p, t)),
    ("grade", r"grade|differentiation", lambda p, t, f: grade(p)),
    ("size", r"\bsize\b", lambda p, t, f: size(p, t)),
    ("stage", r"\bstage\b", lambda p, t, f: stage(p, t)),
    ("extent", r"invasion|extension|extent|depth|thickness|\bpt\d", lambda p, t, f: extent(p, t)),
)


_COMPOUND_RULES = {"node+distant", "lvi+pni"}


def factor_rule(factor: PrognosticFactor) -> str | None:
    """Name of the rule that grounds ``factor``, or None when none does (then never active)."""
    if factor.category in _UNGROUNDABLE_CATEGORIES:
        return None
    name = factor.name.lower()
    for rid, pattern, _ in RULES:
        if re.search(pattern, name):
            return None if rid == "not-groundable" else rid
    return None


def ground_factor(factor: PrognosticFactor, report: RefinedReport | dict[str, Any], patient: Patient | None = None) -> Verdict:
    """True (active for this patient), False (the report states the opposite) or None (unknown)."""
    rid = factor_rule(factor)
    if rid is None:
        return None
    p = patient or _patient(report)
    text = f"{factor.name} {factor.statement}"
    fn = next(f for r, _, f in RULES if r == rid)
    verdict = fn(p, text, factor)
    # "X or Y" where the rule reads only X (e.g. "positive margins or parametrial involvement"):
    # X absent does not make the factor inactive.
    if verdict is False and " or " in factor.name.lower() and rid not in _COMPOUND_RULES:
        return None
    return verdict


def ground_factors(
    factors: list[PrognosticFactor] | list[dict[str, Any]], report: RefinedReport | dict[str, Any]
) -> list[Verdict]:
    """Per factor (in order), whether the patient's report activates it: True / False / None."""
    p = _patient(report)
    fs = [f if isinstance(f, PrognosticFactor) else PrognosticFactor.model_validate(f) for f in factors]
    return [ground_factor(f, report, p) for f in fs]


def risk_level(report: RefinedReport | dict[str, Any]) -> str | None:
    """"low" | "intermediate" | "high" | None (nothing to decide from).

    Stage group first: 0-I low, II intermediate, III-IV high. Without a stage: pM1, any
    node-positive finding or pT4 -> high; pT2-pT3 -> intermediate; pTa/pTis/pT1 with pN0 -> low
    (pT1 with unknown nodes stays unknown, since nodal spread would make it high).
    """
    p = _patient(report)
    if p.known("stage"):
        s = p.num["stage"]
        return "low" if s <= 1 else "intermediate" if s == 2 else "high"
    node_pos = nodes(p, "")
    if distant(p) or node_pos or (p.known("pT") and p.num["pT"] >= 4):
        return "high"
    if p.known("pT") and p.num["pT"] >= 2:
        return "intermediate"
    if p.known("pT") and node_pos is False:
        return "low"
    return None
