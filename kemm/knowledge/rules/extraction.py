"""What the rules extractor fills (``Extraction``) and the text helpers its finders share.

Imports: ``rules.staging`` only.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from kemm.knowledge.rules.staging import NOT_REPORTED, NUMBER_WORDS, ROMAN

NR = NOT_REPORTED


WS = re.compile(r"\s+")
WORD_NUM = r"(?:\d{1,3}|" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r")"


def word_number(tok: str) -> int | None:
    tok = tok.strip().lower()
    if tok.isdigit():
        return int(tok)
    return NUMBER_WORDS.get(tok)



def roman_or_digit(tok: str) -> int | None:
    tok = tok.strip()
    if tok.isdigit():
        return int(tok)
    t = tok.upper().replace("L", "I")
    return ROMAN.get(t)


def sentence_start(text: str, pos: int, limit: int) -> int:
    """Start of the clause containing ``pos``, at most ``limit`` chars back."""
    lo = max(0, pos - limit)
    window = text[lo:pos]
    cut = max(window.rfind(". "), window.rfind("; "), window.rfind(": -"))
    return lo + cut + 2 if cut >= 0 else lo


def windows(low: str, keys: re.Pattern, before: int, after: int) -> list[tuple[int, int]]:
    """Merged spans around every match of ``keys``: the expensive patterns run only there."""
    spans: list[tuple[int, int]] = []
    for m in keys.finditer(low):
        lo, hi = max(0, m.start() - before), min(len(low), m.end() + after)
        if spans and lo <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(hi, spans[-1][1]))
        else:
            spans.append((lo, hi))
    return spans


def finditer_in(rx: re.Pattern, low: str, spans: list[tuple[int, int]]) -> Iterator[re.Match]:
    for lo, hi in spans:
        yield from rx.finditer(low, lo, hi)


def search_in(rx: re.Pattern, low: str, spans: list[tuple[int, int]]) -> re.Match | None:
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


