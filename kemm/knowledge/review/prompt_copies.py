"""Claims copied from the prompt: a value the prompt shows as an example, absent from the report.

Small models copy what they see: a prompt that says ``pT2a -> "T2a"`` gets
``"pT": "T2a"`` back for reports that never mention T2a.  Such a claim is
already *unsupported*; this module names the likely cause, so that an audit
can tell a prompt problem (fix the prompt) from a reading problem.

The example values of a prompt are the checkable claims (TNM categories,
stage groups, grades, sizes) found in its rendered instruction text, i.e. the
messages rendered with an empty report.  Plain numbers and counts are left
out: "at most 8 statements" must not make every 8 a copy.

Imports: kemm.knowledge.review.claims, kemm.knowledge.generate.prompts.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kemm.knowledge.review.claims import Claim, text_claims
from kemm.knowledge.generate.prompts import Prompt, PromptError, load_prompt

EXAMPLE_KINDS = ("tnm", "stage", "grade", "grade_word", "size")
COPIED = "copied_from_prompt"


# A quoted roman numeral in an instruction is a stage-group example ('in roman numerals ("IIIA")').
_QUOTED_STAGE = re.compile(r"[\"'](?P<n>IV|III|II|I)(?P<s>[A-C][1-3]?)?[\"']")


def prompt_examples(messages: list[dict[str, str]]) -> set[str]:
    """Canonical values (``"T2a"``, ``"stage IIIA"``, ``"grade 3"`` ...) shown in prompt messages."""
    out: set[str] = set()
    for m in messages:
        for c, _ in text_claims(m["content"], m["role"]):
            if c.kind in EXAMPLE_KINDS:
                out.add(c.value)
        for q in _QUOTED_STAGE.finditer(m["content"]):
            out.add(f"stage {q.group('n')}{q.group('s') or ''}")
    return out


def examples_of(prompt: Prompt) -> set[str]:
    """Example values of a report prompt's instructions (rendered with an empty report)."""
    return prompt_examples(prompt.render(case_id="", cancer_type="", report_text="", cancer_name=""))


def copied_claims(claims: list[Claim], examples: set[str]) -> list[Claim]:
    """The unsupported claims whose value is one of the prompt's examples."""
    return [c for c in claims if not c.supported and c.value in examples]


def manifest_examples(manifest: dict[str, Any]) -> set[str] | None:
    """Example values of the prompt a source was built with (None when it cannot be loaded)."""
    ident = manifest.get("identity", {})
    path = (manifest.get("provenance") or {}).get("prompt_path") or manifest.get("prompt_path")
    try:
        if path and Path(path).is_file():
            prompt = load_prompt(ident.get("prompt_name"), ident.get("prompt_version"), Path(path).parent.parent)
        else:
            prompt = load_prompt(ident.get("prompt_name") or "refine_report", ident.get("prompt_version"))
    except (PromptError, OSError, TypeError):
        return None
    if ident.get("prompt_sha") and prompt.sha256 != ident["prompt_sha"]:
        return None  # not the prompt the source was built with
    return examples_of(prompt)
