r"""Decoder-friendly JSON schemas and xgrammar grammars for constrained decoding.

A constrained decoder only has to keep the model inside a *subset* of what the
Pydantic schema accepts: Pydantic validates every output again afterwards
(``kemm.knowledge.generate.repair``).  So the schema handed to a decoder may be tighter
than the Pydantic one, and may drop a constraint the decoder cannot compile.

``decoder_schema`` makes these changes to ``Schema.model_json_schema()``:

- integers without bounds get ``|n| <= 999_999_999``: a weak model otherwise
  emits digits until ``max_tokens`` (the grammar never forces an end);
- a ``pattern`` with a bounded repetition above ``MAX_PATTERN_REPEAT`` is
  dropped (xgrammar 0.2.8 fails to compile ``{1,300}`` in a regex; ``minLength``
  / ``maxLength`` still bound the string, and Pydantic checks the pattern);
- small bounded repetitions of one atom are spelled out, ``[0-9]{1,3}`` →
  ``[0-9][0-9]?[0-9]?``: xgrammar 0.2.8 lets ``^([0-9]{1,3}(\.[0-9]{1,2})? cm)$``
  accept ``"5888 cm"`` (the bound is lost before an optional group).

``compile_xgrammar`` additionally forbids raw control characters inside
strings: xgrammar's length-bounded string rule is ``[^"\\\\\\r\\n]{min,max}``,
which lets a model write a raw tab or U+0001 (not valid strict JSON).

Pure Python here; xgrammar is imported inside ``compile_xgrammar`` only.
"""
from __future__ import annotations

import copy
import json
import re
from typing import Any

from pydantic import BaseModel

MAX_PATTERN_REPEAT = 128
INT_BOUND = 999_999_999

_REPEAT = re.compile(r"(?<!\\)\{(\d+)(?:,(\d*))?\}")
# One regex atom (a character class, an escape, or a plain character) then {m} or {m,n}.
_ATOM_REPEAT = re.compile(r"(\[(?:\\.|[^\]\\])+\]|\\.|[^\\()\[\]{}|?*+^$])\{(\d+)(?:(,)(\d+))?\}")
MAX_EXPAND = 16
# xgrammar's character rule for minLength/maxLength strings, and its tightened form.
_LOOSE_CHARS = '[^\\"\\\\\\r\\n]'
_STRICT_CHARS = '[^\\0-\\x1f\\"\\\\]'


def decoder_schema(schema: type[BaseModel] | dict[str, Any]) -> dict[str, Any]:
    """The JSON schema to hand a constrained decoder (a dict; the input is not changed)."""
    js = schema.model_json_schema() if isinstance(schema, type) else copy.deepcopy(schema)
    _walk(js)
    return js


def decoder_schema_json(schema: type[BaseModel] | dict[str, Any]) -> str:
    # Key order matters: the grammar emits properties in schema order.
    return json.dumps(decoder_schema(schema))


def pattern_too_long(pattern: str, limit: int = MAX_PATTERN_REPEAT) -> bool:
    """True when ``pattern`` has a bounded repetition ``{m}``/``{m,n}`` above ``limit``."""
    for m in _REPEAT.finditer(pattern):
        hi = m.group(2) if m.group(2) not in (None, "") else m.group(1)
        if int(hi) > limit or int(m.group(1)) > limit:
            return True
    return False


def expand_small_repeats(pattern: str, limit: int = MAX_EXPAND) -> str:
    """Spell out ``atom{m,n}`` (n <= ``limit``) as m copies of the atom and n-m optional ones."""

    def sub(m: re.Match[str]) -> str:
        atom, lo = m.group(1), int(m.group(2))
        hi = int(m.group(4)) if m.group(3) else lo
        if hi > limit or hi < lo:
            return m.group(0)
        return atom * lo + (atom + "?") * (hi - lo)

    return _ATOM_REPEAT.sub(sub, pattern)


def _walk(node: Any) -> None:
    if isinstance(node, list):
        for it in node:
            _walk(it)
        return
    if not isinstance(node, dict):
        return
    types = node.get("type")
    types = types if isinstance(types, list) else [types]
    if "integer" in types:
        node.setdefault("minimum", -INT_BOUND)
        node.setdefault("maximum", INT_BOUND)
    if "string" in types and isinstance(node.get("pattern"), str):
        if pattern_too_long(node["pattern"]):
            del node["pattern"]
        else:
            node["pattern"] = expand_small_repeats(node["pattern"])
    for k, v in node.items():
        if k in ("enum", "const", "default", "examples"):
            continue
        _walk(v)


def tighten_strings(ebnf: str) -> str:
    """Forbid raw control characters in xgrammar's length-bounded string rules."""
    return ebnf.replace(_LOOSE_CHARS, _STRICT_CHARS)


def compile_xgrammar(compiler: Any, schema: type[BaseModel] | dict[str, Any]) -> Any:
    """Compile ``schema`` for ``compiler`` (an ``xgrammar.GrammarCompiler``).

    Whitespace is fixed (``any_whitespace=False``): with free whitespace a weak
    model can emit spaces and newlines until ``max_tokens``.
    """
    import xgrammar as xgr  # lazy: only constrained decoding needs it (pulls in torch)

    grammar = xgr.Grammar.from_json_schema(
        decoder_schema_json(schema), any_whitespace=False, strict_mode=True
    )
    return compiler.compile_grammar(xgr.Grammar.from_ebnf(tighten_strings(str(grammar))))
