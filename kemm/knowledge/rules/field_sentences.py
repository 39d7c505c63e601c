"""One versioned template set: a validated ``RefinedReport``'s fields as self-contained sentences.

Every field whose value is not "not reported" becomes one sentence that states the value
AND what it implies ("Primary tumour category pT3: ... (locally advanced)."), so that a
sentence encoder, and through it the model, sees each finding with its prognostic meaning
instead of a bare code. The sentences are cancer-agnostic (AJCC categories read the same
way in every organ at this level of detail) and never add a fact the report does not state:
the implication is the general meaning of the stated category, nothing patient-specific.

Each sentence's *kind* names its field and the value's category (``pT:3``, ``stage_group:2``,
``nodes:4+``, ``margin_status:positive``; ``histologic_type`` has no category): the model half
gives every kind a learned embedding, so a category reaches the model as its own token
embedding, as categorical features do in tabular transformers (FT-Transformer's feature
tokenizer, Gorishniy et al., NeurIPS 2021), beside the sentence's embedding. The linear
probe of experiments/tcga/SIGNAL.md showed why: the validated fields carry more survival
signal than the sentence embeddings of the same values (the encoder blurs "pT3" vs "pT2").
``kind_field`` recovers the field of a kind (fields-v1 kinds were the field names only).

Changing any wording or kind means a new ``FIELD_SENTENCES_VERSION``: derived sources record it,
and a derived source built with another version is refused (``kemm.knowledge.generate.derive``).

Numbers come from the one parser of the schema's codes (``kemm.knowledge.covariates``);
this module only words them.
"""
from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from kemm.knowledge.rules.covariates import encode_report
from kemm.knowledge.generate.schemas import NOT_REPORTED, RefinedReport, Statement

# A field sentence is a Statement of FieldStatements: a free-text value (an LLM's histologic type
# may run to 300 characters) is shortened so the sentence stays within that limit.
_STATEMENT_MAX = next(m.max_length for m in Statement.__metadata__ if getattr(m, "max_length", None))

FIELD_SENTENCES_VERSION = "fields-v2"  # v2: kinds carry the value category

# Kinds = the schema's field names, in the order the sentences are written (nodes = the
# positive/examined pair as one finding).
FIELD_KINDS: tuple[str, ...] = (
    "histologic_type",
    "grade",
    "pT",
    "pN",
    "pM",
    "stage_group",
    "tumor_size",
    "nodes",
    "margin_status",
    "lymphovascular_invasion",
    "perineural_invasion",
)

# A histologic type names a tumour only when it has one of these nouns; anything else
# ("bladder", "malignant", a site) restates the site and says nothing about the tumour.
_HISTOLOGY_NOUN = re.compile(
    r"carcinoma|sarcoma|melanoma|glioma|blastoma|astrocytoma|lymphoma|mesothelioma|seminoma|"
    r"carcinoid|tumou?r|neoplasm|m[uü]ll?erian|adenoma|germinoma|cytoma"
)
_GENERIC_TYPES = {"carcinoma", "malignant neoplasm", "neoplasm", "tumor", "tumour", "malignant tumor", "malignant tumour", "cancer"}

_T_MEANING = {
    "0": "no evidence of a primary tumour in the specimen",
    "is": "carcinoma in situ, a non-invasive tumour (earliest category)",
    "a": "non-invasive papillary carcinoma (earliest category)",
    "1": "the smallest or least invasive primary tumour category (early, organ-confined disease)",
    "2": "an intermediate primary tumour category, larger or more deeply invasive than pT1 (intermediate extent)",
    "3": "a large or locally extensive tumour, typically extending beyond its organ wall into surrounding tissue (locally advanced)",
    "4": "the tumour invades adjacent organs or structures (the most advanced primary tumour category)",
}
_N_MEANING = {
    1: "limited regional nodal spread, an adverse prognostic sign",
    2: "more extensive regional nodal spread, a strongly adverse prognostic sign",
    3: "the most extensive regional nodal spread, a strongly adverse prognostic sign",
}
_STAGE_MEANING = {
    0: "non-invasive (in situ) disease with an excellent prognosis",
    1: "localised early disease with a favourable prognosis",
    2: "locally more extensive disease with an intermediate prognosis",
    3: "regional spread, advanced disease with poorer prognosis",
    4: "distant or very extensive spread, the most advanced stage with the poorest prognosis",
}
_GRADE_SENTENCE = {
    "G1": "Histologic grade G1: well differentiated, low-grade tumour (less aggressive).",
    "G2": "Histologic grade G2: moderately differentiated, intermediate-grade tumour.",
    "G3": "Histologic grade G3: poorly differentiated, high-grade tumour (aggressive).",
    "G4": "Histologic grade G4: undifferentiated, high-grade tumour (most aggressive).",
    "low grade": "Low-grade tumour: better differentiated and less aggressive.",
    "high grade": "High-grade tumour: poorly differentiated and aggressive.",
}
_MARGIN_SENTENCE = {
    "positive": "Surgical margin positive: tumour reaches the resection margin, a risk of residual disease and local recurrence.",
    "close": "Surgical margin close: tumour lies near the resection margin, a possible risk of local recurrence.",
    "negative": "Surgical margins negative: the tumour was excised with clear margins.",
}
_INVASION = {
    "lymphovascular_invasion": ("Lymphovascular invasion", "tumour cells in lymphatic or blood vessels, a risk of nodal and distant spread"),
    "perineural_invasion": ("Perineural invasion", "tumour cells along nerves, a risk of local recurrence"),
}


def field_sentences(report: RefinedReport | BaseModel | dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, sentence) per reported field of a validated refined report, in ``FIELD_KINDS`` order.

    Args:
        report: a ``RefinedReport`` or its output dict (validated here; an invalid dict raises
            pydantic's ``ValidationError`` naming the field).
    Returns:
        ``[(kind, sentence), ...]``, at most one per kind; empty when nothing is reported.
    """
    rep = report if isinstance(report, RefinedReport) else RefinedReport.model_validate(
        report.model_dump() if isinstance(report, BaseModel) else report
    )
    out = rep.model_dump(mode="json")
    num = encode_report(out)
    writers = {
        "histologic_type": lambda: _histology(out["histologic_type"]),
        "grade": lambda: _GRADE_SENTENCE.get(out["grade"]),
        "pT": lambda: _pt(out["pT"]),
        "pN": lambda: _pn(out["pN"], num["pN"]),
        "pM": lambda: _pm(out["pM"], num["pM"]),
        "stage_group": lambda: _stage(out["stage_group"], num["stage"]),
        "tumor_size": lambda: _size(out["tumor_size"], num["tumor_size"]),
        "nodes": lambda: _nodes(out["nodes_positive"], out["nodes_examined"]),
        "margin_status": lambda: _MARGIN_SENTENCE.get(out["margin_status"]),
        "lymphovascular_invasion": lambda: _invasion("lymphovascular_invasion", out["lymphovascular_invasion"]),
        "perineural_invasion": lambda: _invasion("perineural_invasion", out["perineural_invasion"]),
    }
    pairs = [(kind, writers[kind]()) for kind in FIELD_KINDS]
    return [(_with_category(k, out, num), s) for k, s in pairs if s]


def kind_field(kind: str) -> str:
    """The field of a field kind (``"pT:3"`` -> ``"pT"``); any other kind unchanged."""
    return kind.split(":", 1)[0] if kind.split(":", 1)[0] in FIELD_KINDS else kind


def _with_category(kind: str, out: dict[str, Any], num: dict[str, float]) -> str:
    cat = _category(kind, out, num)
    return f"{kind}:{cat}" if cat else kind


def _category(kind: str, out: dict[str, Any], num: dict[str, float]) -> str | None:
    """The value category of a written field sentence (a small closed set per field)."""
    if kind == "grade":
        return {"low grade": "low", "high grade": "high"}.get(out["grade"], out["grade"])
    if kind in ("pT", "pN", "pM"):
        m = re.match(rf"^{kind[1]}(is|a|X|\d)", out[kind])
        return m.group(1) if m else None
    if kind == "stage_group":
        return str(int(num["stage"]))
    if kind == "tumor_size":
        cm = num["tumor_size"]
        return "lt2cm" if cm < 2 else ("2-5cm" if cm <= 5 else "gt5cm")
    if kind == "nodes":
        pos = out["nodes_positive"]
        if not isinstance(pos, int):
            return "unknown"
        return "0" if pos == 0 else ("1-3" if pos <= 3 else "4+")
    if kind == "margin_status":
        return out["margin_status"]
    if kind in ("lymphovascular_invasion", "perineural_invasion"):
        return out[kind]
    return None


def _histology(v: str) -> str | None:
    low = v.strip().lower()
    if low == NOT_REPORTED or low in _GENERIC_TYPES or not _HISTOLOGY_NOUN.search(low):
        return None
    v = v.strip()
    room = _STATEMENT_MAX - len("Histologic type: .")
    if len(v) > room:
        v = v[: room - 1].rstrip() + "…"
    return f"Histologic type: {v}."


def _pt(v: str) -> str | None:
    if v == NOT_REPORTED:
        return None
    if v == "TX":
        return "Primary tumour category pTX: the primary tumour cannot be assessed."
    m = re.match(r"^T(is|a|\d)", v)
    meaning = _T_MEANING.get(m.group(1)) if m else None
    return f"Primary tumour category p{v}: {meaning}." if meaning else None


def _pn(v: str, n: float) -> str | None:
    if v == NOT_REPORTED:
        return None
    if v == "NX":
        return "Regional lymph nodes cannot be assessed (pNX)."
    if n == 0:
        return "No regional lymph node metastasis (pN0)."
    meaning = _N_MEANING.get(int(n)) if n == n else None
    return f"Regional lymph node metastasis present (p{v}): {meaning}." if meaning else None


def _pm(v: str, m: float) -> str | None:
    if v == NOT_REPORTED:
        return None
    if v == "MX":
        return "Distant metastasis cannot be assessed (pMX)."
    if m == 0:
        return "No distant metastasis (pM0)."
    return f"Distant metastasis present (p{v}): stage IV disease with a poor prognosis."


def _stage(v: str, s: float) -> str | None:
    if v == NOT_REPORTED or s != s:  # NaN: not a stage the parser knows
        return None
    return f"Pathologic stage {v}: {_STAGE_MEANING[int(s)]}."


def size_band(cm: float) -> str:
    """Coarse size band of a greatest dimension in cm (shared by the sentences and grounding)."""
    if cm < 2:
        return "under 2 cm: a small tumour"
    if cm <= 5:
        return "2 to 5 cm: an intermediate-size tumour"
    return "over 5 cm: a large tumour"


def _size(v: str, cm: float) -> str | None:
    if v == NOT_REPORTED or cm != cm:
        return None
    return f"Tumour size {v} in greatest dimension ({size_band(cm)})."


def _nodes(pos: int | str, exam: int | str) -> str | None:
    has_p, has_e = isinstance(pos, int), isinstance(exam, int)
    if has_p and has_e:
        if pos == 0:
            return f"None of {exam} examined lymph nodes contains metastasis (node-negative)."
        verb = "contains" if pos == 1 else "contain"
        return f"{pos} of {exam} examined lymph nodes {verb} metastasis (node-positive)."
    if has_p:
        if pos == 0:
            return "No lymph node with metastasis was found (node-negative)."
        return f"{pos} lymph node{'s' if pos != 1 else ''} with metastasis (node-positive)."
    if has_e:
        return f"{exam} lymph node{'s' if exam != 1 else ''} examined; the number with metastasis is not reported."
    return None


def _invasion(field: str, v: str) -> str | None:
    label, meaning = _INVASION[field]
    if v == "present":
        return f"{label} present: {meaning}."
    if v == "absent":
        return f"No {label.lower()} (absent)."
    return None
