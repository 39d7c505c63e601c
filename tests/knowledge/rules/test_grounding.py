from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fakes import VALID_REPORT
from kemm.knowledge import ground_factors
from kemm.knowledge.generate.backends.rules import pbk_raw
from kemm.knowledge.rules.grounding import factor_rule, risk_level
from kemm.knowledge.generate.schemas import NOT_REPORTED, PrognosticFactor, PrognosticKnowledge

NR = NOT_REPORTED
CURATED = Path(__file__).resolve().parents[3] / "kemm" / "knowledge" / "rules" / "pbk_curated.yaml"
BLANK = {k: NR for k in VALID_REPORT if k not in ("key_statements", "summary")} | {"key_statements": [], "summary": "None."}


def curated() -> dict[str, PrognosticKnowledge]:
    """Every curated entry (not the aliases), as the rules backend serves it (without ``refs``)."""
    d = yaml.safe_load(CURATED.read_text())
    return {ct: PrognosticKnowledge.model_validate(pbk_raw(ct)) for ct in d if not ct.startswith("_")}


def by_name(ct: str, report: dict) -> dict[str, bool | None]:
    pbk = curated()[ct]
    return {f.name: v for f, v in zip(pbk.prognostic_factors, ground_factors(pbk.prognostic_factors, report))}


def test_node_factor_follows_the_patient():
    pos = by_name("BLCA", dict(BLANK, pN="N2"))
    neg = by_name("BLCA", dict(BLANK, pN="N0", nodes_positive=0, nodes_examined=14))
    unknown = by_name("BLCA", BLANK)
    assert pos["lymph node metastasis"] is True
    assert neg["lymph node metastasis"] is False
    assert unknown["lymph node metastasis"] is None
    assert by_name("BLCA", dict(BLANK, nodes_positive=2))["lymph node metastasis"] is True  # a count alone
    # LUSC's factor names pN2: pN1 does not activate it, a bare positive count leaves it unknown
    assert by_name("LUSC", dict(BLANK, pN="N1"))["lymph node metastasis"] is False
    assert by_name("LUSC", dict(BLANK, nodes_positive=1))["lymph node metastasis"] is None


def test_truth_table_blca():
    r = by_name("BLCA", dict(BLANK, pT="T3a", grade="high grade", margin_status="positive",
                             lymphovascular_invasion="absent", histologic_type="micropapillary urothelial carcinoma"))
    assert r == {"muscle invasion (pT2 or higher)": True, "extravesical extension": True, "lymph node metastasis": None,
                 "high grade": True, "lymphovascular invasion": False, "variant histology": True,
                 "positive surgical margin": True, "luminal papillary molecular subtype": None}
    r = by_name("BLCA", dict(BLANK, pT="T2b", grade="low grade", margin_status="negative"))
    assert r["muscle invasion (pT2 or higher)"] is True and r["extravesical extension"] is False
    assert r["high grade"] is False and r["positive surgical margin"] is False and r["variant histology"] is None


def test_thresholds_stated_by_factors():
    assert by_name("PRAD", dict(BLANK, pT="T3a"))["seminal vesicle invasion"] is False
    assert by_name("PRAD", dict(BLANK, pT="T3b"))["seminal vesicle invasion"] is True
    assert by_name("PRAD", dict(BLANK, pT="T3a"))["extraprostatic extension"] is True
    assert by_name("UCEC", dict(BLANK, pT="T1b"))["depth of myometrial invasion"] is True
    assert by_name("UCEC", dict(BLANK, pT="T1a"))["depth of myometrial invasion"] is False
    assert by_name("CESC", dict(BLANK, tumor_size="45 mm"))["tumour size"] is True
    assert by_name("CESC", dict(BLANK, tumor_size="3 cm"))["tumour size"] is False
    assert by_name("COADREAD", dict(BLANK, nodes_examined=14))["lymph nodes examined"] is True
    assert by_name("UCEC", dict(BLANK, stage_group="IIIC1"))["FIGO stage"] is True
    assert by_name("UCEC", dict(BLANK, stage_group="IB"))["FIGO stage"] is False
    # "or"-compound with an ungroundable part: negative margins do not make it inactive
    assert by_name("CESC", dict(BLANK, margin_status="negative"))["positive margins or parametrial involvement"] is None
    assert by_name("HNSC", dict(BLANK, margin_status="close"))["positive margin"] is True  # "involved or close"
    assert by_name("LUSC", dict(BLANK, margin_status="negative"))["complete resection"] is True
    kirc = by_name("KIRC", dict(BLANK, pN="N0", pM="M1"))
    assert kirc["lymph node and distant metastasis"] is True


def test_ungroundable_factors_are_unknown():
    f = PrognosticFactor(name="IDH mutation", category="molecular", direction="favourable", statement="IDH-mutant gliomas do well.")
    g = PrognosticFactor(name="extranodal extension", category="stage", direction="unfavourable", statement="ENE of nodal metastasis is adverse.")
    assert ground_factors([f, g], dict(BLANK, pN="N3")) == [None, None]


def test_risk_level():
    assert risk_level(dict(BLANK, stage_group="IA")) == "low"
    assert risk_level(dict(BLANK, stage_group="II")) == "intermediate"
    assert risk_level(dict(BLANK, stage_group="IVB")) == "high"
    assert risk_level(dict(BLANK, pT="T2", pN="N1")) == "high"
    assert risk_level(dict(BLANK, pT="T3")) == "intermediate"
    assert risk_level(dict(BLANK, pT="T1", pN="N0")) == "low"
    assert risk_level(dict(BLANK, pT="T1")) is None
    assert risk_level(BLANK) is None


def test_coverage_of_curated_pbk():
    """Every stage/node/grade/margin/invasion factor of the curated PBK is groundable, except those
    no RefinedReport field carries (listed)."""
    not_in_schema = {"extent of resection", "visceral pleural invasion", "extranodal extension",
                     "depth of stromal invasion", "Gleason score and grade group",
                     "mediastinal primary or non-pulmonary visceral metastasis", "ciliary body involvement"}
    n = grounded = 0
    for pbk in curated().values():
        for f in pbk.prognostic_factors:
            n += 1
            rule = factor_rule(f)
            grounded += rule is not None
            core = f.category in ("stage", "grade") or any(w in f.name.lower() for w in ("margin", "invasion", "node"))
            if core and f.name not in not_in_schema:
                assert rule is not None, f"{pbk.cancer_type}: {f.name}"
    print(f"\ncurated PBK: {grounded} of {n} factors groundable")
    assert len(curated()) == 31 and grounded >= 125  # 29 study entries + GBMLGG + COADREAD


def test_distant_metastasis_factor_follows_pm():
    f = next(f for f in curated()["THCA"].prognostic_factors if f.name == "distant metastasis")
    assert factor_rule(f) == "distant"
    assert ground_factors([f], dict(BLANK, pM="M1")) == [True]
    assert ground_factors([f], dict(BLANK, pM="M0")) == [False]
    assert ground_factors([f], BLANK) == [None]
