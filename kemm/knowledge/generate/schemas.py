"""Output schemas of the knowledge tasks (Pydantic v2).

Every task validates an LLM's (or the rules extractor's) output against one of
these models.  Closed vocabularies are enums or patterns; anything the source
does not state is ``"not reported"`` rather than a guess.  ``statements()``
returns the short texts that later get embedded and become knowledge tokens.
"""
from __future__ import annotations

import hashlib
import json
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from kemm.knowledge.rules.staging import (
    HIGH_GRADE,
    LOW_GRADE,
    NOT_REPORTED,
    PM_CODE,
    PN_CODE,
    PT_CODE,
    STAGE_GROUP_CODE,
)


Short = Annotated[str, StringConstraints(min_length=1, max_length=300)]
Statement = Annotated[str, StringConstraints(min_length=3, max_length=300)]


class Grade(str, Enum):
    G1 = "G1"
    G2 = "G2"
    G3 = "G3"
    G4 = "G4"
    LOW = LOW_GRADE
    HIGH = HIGH_GRADE
    NOT_REPORTED = NOT_REPORTED


class Margin(str, Enum):
    NEGATIVE = "negative"
    POSITIVE = "positive"
    CLOSE = "close"
    NOT_REPORTED = NOT_REPORTED


class Presence(str, Enum):
    PRESENT = "present"
    ABSENT = "absent"
    NOT_REPORTED = NOT_REPORTED


# TNM codes as written in AJCC 7th/8th edition reports, optional y/p/c prefix
# stripped by producers; 'X' = cannot be assessed.
# (The pattern strings are part of schema_sha, hence of every cache identity: keep them.)
PT = Annotated[str, StringConstraints(pattern=rf"^({PT_CODE}|{NOT_REPORTED})$")]
PN = Annotated[str, StringConstraints(pattern=rf"^({PN_CODE}|{NOT_REPORTED})$")]
PM = Annotated[str, StringConstraints(pattern=rf"^({PM_CODE}|{NOT_REPORTED})$")]
StageGroup = Annotated[str, StringConstraints(pattern=rf"^({STAGE_GROUP_CODE}|{NOT_REPORTED})$")]
# A size such as "2.5 cm" / "14 mm", or not reported.
Size = Annotated[
    str, StringConstraints(pattern=r"^([0-9]{1,3}(\.[0-9]{1,2})? (cm|mm)|not reported)$")
]


class RefinedReport(BaseModel):
    """A pathologist report condensed to prognostically relevant facts."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    histologic_type: Short = Field(
        description="Histologic type as written in the report, e.g. 'urothelial carcinoma'; "
        "'not reported' if absent."
    )
    grade: Grade = Field(description="Histologic grade; 'not reported' if absent.")
    pT: PT = Field(description="Primary tumour category without prefix, e.g. 'T2a'.")
    pN: PN = Field(description="Regional node category without prefix, e.g. 'N1'.")
    pM: PM = Field(description="Distant metastasis category, e.g. 'M0'; often 'not reported'.")
    stage_group: StageGroup = Field(description="AJCC stage group in roman numerals, e.g. 'IIIA'.")
    tumor_size: Size = Field(description="Greatest tumour dimension, e.g. '2.5 cm'.")
    nodes_positive: Annotated[int, Field(ge=0)] | Literal["not reported"] = Field(
        description="Number of positive lymph nodes, or 'not reported'."
    )
    nodes_examined: Annotated[int, Field(ge=0)] | Literal["not reported"] = Field(
        description="Number of lymph nodes examined, or 'not reported'."
    )
    margin_status: Margin
    lymphovascular_invasion: Presence
    perineural_invasion: Presence
    key_statements: list[Statement] = Field(
        default_factory=list,
        max_length=8,
        description="Up to 8 short, clinically focused statements, each supported by the report.",
    )
    summary: Annotated[str, StringConstraints(min_length=3, max_length=600)] = Field(
        description="One or two sentences summarising the prognostically relevant findings."
    )

    def statements(self) -> list[str]:
        """Texts that get embedded: the key statements then the summary."""
        out = [s.strip() for s in self.key_statements if s.strip()]
        out.append(self.summary.strip())
        return out


class Category(str, Enum):
    HISTOLOGY = "histology"
    STAGE = "stage"
    GRADE = "grade"
    MOLECULAR = "molecular"
    CLINICAL = "clinical"
    TREATMENT = "treatment"
    MICROENVIRONMENT = "microenvironment"


class Direction(str, Enum):
    FAVOURABLE = "favourable"
    UNFAVOURABLE = "unfavourable"
    CONTEXT = "context-dependent"


class PrognosticFactor(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    name: Short
    category: Category
    direction: Direction
    statement: Statement


class RiskLevels(BaseModel):
    model_config = ConfigDict(extra="forbid")

    low: Statement
    intermediate: Statement
    high: Statement


class PrognosticKnowledge(BaseModel):
    """Prognostic background knowledge (PBK) for one cancer type."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    cancer_type: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2,10}$")] = Field(
        description="TCGA study code, e.g. 'BLCA'."
    )
    prognostic_factors: list[PrognosticFactor] = Field(min_length=1, max_length=16)
    risk_levels: RiskLevels

    def statements(self) -> list[str]:
        out = [f.statement.strip() for f in self.prognostic_factors]
        out += [self.risk_levels.low, self.risk_levels.intermediate, self.risk_levels.high]
        return out


# -- derived sources (kemm.knowledge.generate.derive): statements written from another source's
# validated outputs by a versioned template set, each with its kind (what the statement is about).
Kind = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_:+-]{1,64}$")]


class KindStatement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Kind = Field(description="What the statement is about: a RefinedReport field name, e.g. 'pT'.")
    text: Statement


class FieldStatements(BaseModel):
    """One sentence per reported field of a refined report (``kemm.knowledge.rules.field_sentences``).

    The list is ``items`` (not ``statements``) so that ``statements()`` can be the method every
    schema has: the texts that get embedded, in order, aligned with ``kinds()``.
    """

    model_config = ConfigDict(extra="forbid")

    items: list[KindStatement] = Field(min_length=1)

    def statements(self) -> list[str]:
        return [s.text.strip() for s in self.items]

    def kinds(self) -> list[str]:
        return [s.kind for s in self.items]


class GroundedStatement(KindStatement):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    direction: Direction


class GroundedKnowledge(BaseModel):
    """A cancer type's PBK grounded in one patient: the factors active for this patient and the
    risk-level statement that applies (kinds ``pbk:<category>:<direction>``, ``pbk:risk-<level>``)."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    cancer_type: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2,10}$")]
    items: list[GroundedStatement] = Field(min_length=1)

    def statements(self) -> list[str]:
        return [s.text.strip() for s in self.items]

    def kinds(self) -> list[str]:
        return [s.kind for s in self.items]


SCHEMAS: dict[str, type[BaseModel]] = {
    "RefinedReport": RefinedReport,
    "PrognosticKnowledge": PrognosticKnowledge,
    "FieldStatements": FieldStatements,
    "GroundedKnowledge": GroundedKnowledge,
}


def get_schema(name: str) -> type[BaseModel]:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(sorted(SCHEMAS))}") from None


def json_schema(schema: type[BaseModel]) -> dict:
    """The JSON schema handed to constrained decoders."""
    return schema.model_json_schema()


def schema_sha(schema: type[BaseModel]) -> str:
    blob = json.dumps(json_schema(schema), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()
