"""Versioned prompt templates: ``prompts/<task>/v<N>.jinja``.

A template file starts with YAML front matter between ``---`` lines::

    ---
    name: refine_report
    version: 1
    schema: RefinedReport
    description: ...
    sampling: {temperature: 0.0, max_tokens: 1024}
    ---
    {% block system %}...{% endblock %}
    {% block user %}...{% endblock %}

The body defines two blocks, ``system`` and ``user``; they are rendered in a
sandboxed Jinja environment with ``StrictUndefined`` and returned as chat
messages.  A prompt's identity is the sha256 of its file bytes.

Default version (:func:`default_version`): the highest for the LLM backends, but v1 for
the ``rules`` backend.  The rules extractor ignores the prompt text, yet the prompt's
version and sha are part of every source's identity: moving rules-built sources to a
newer prompt would refuse every existing rules source (demo, benchmark) for no change
in what they hold.
"""
from __future__ import annotations

from kemm.knowledge.errors import KnowledgeError

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from kemm.knowledge.generate.schemas import get_schema

_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*\n(.*)\Z", re.S)
_REQUIRED = ("name", "version", "schema", "sampling", "description")


class PromptError(KnowledgeError):
    """A prompt file is malformed or cannot be rendered."""


def default_prompts_dir() -> Path:
    env = os.environ.get("KEMM_PROMPTS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "prompts"


@dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    schema_name: str
    sampling: dict[str, Any]
    description: str
    body: str
    path: Path
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def schema(self):
        return get_schema(self.schema_name)

    def render(self, **variables: Any) -> list[dict[str, str]]:
        """Render to chat messages ``[{role: system, ...}, {role: user, ...}]``."""
        env = ImmutableSandboxedEnvironment(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
        )
        try:
            tmpl = env.from_string(self.body)
            ctx = tmpl.new_context(dict(variables))
            out = {}
            for role in ("system", "user"):
                if role not in tmpl.blocks:
                    raise PromptError(f"{self.path}: template has no '{{% block {role} %}}'")
                out[role] = "".join(tmpl.blocks[role](ctx)).strip()
        except UndefinedError as e:
            raise PromptError(
                f"{self.path}: rendering needs a variable that was not given ({e.message}); "
                f"given: {sorted(variables)}"
            ) from None
        except SecurityError as e:
            raise PromptError(f"{self.path}: blocked by the template sandbox: {e}") from None
        return [{"role": "system", "content": out["system"]}, {"role": "user", "content": out["user"]}]


def parse_prompt_file(path: Path) -> Prompt:
    path = Path(path)
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    m = _FRONT.match(text)
    if not m:
        raise PromptError(f"{path}: missing YAML front matter (a '---' line, YAML, then '---')")
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as e:
        raise PromptError(f"{path}: front matter is not valid YAML: {e}") from None
    if not isinstance(meta, dict):
        raise PromptError(f"{path}: front matter must be a mapping, got {type(meta).__name__}")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise PromptError(f"{path}: front matter lacks {missing}; required keys: {list(_REQUIRED)}")
    if not isinstance(meta["sampling"], dict):
        raise PromptError(f"{path}: front matter 'sampling' must be a mapping, e.g. {{temperature: 0}}")
    try:
        version = int(meta["version"])
    except (TypeError, ValueError):
        raise PromptError(f"{path}: 'version' must be an integer, got {meta['version']!r}") from None
    try:
        get_schema(str(meta["schema"]))
    except KeyError as e:
        raise PromptError(f"{path}: {e.args[0]}") from None
    body = m.group(2)
    try:
        ImmutableSandboxedEnvironment().parse(body)
    except TemplateSyntaxError as e:
        raise PromptError(f"{path}:{e.lineno}: template syntax error: {e.message}") from None
    return Prompt(
        name=str(meta["name"]),
        version=version,
        schema_name=str(meta["schema"]),
        sampling=dict(meta["sampling"]),
        description=str(meta["description"]),
        body=body,
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        meta=meta,
    )


RULES_PROMPT_VERSION = 1  # the version every rules-built source has in its identity
PROMPT_FREE_BACKENDS = ("rules",)  # backends that do not read the prompt text


def default_version(task: str, backend: str, prompts_dir: Path | None = None) -> int | None:
    """The prompt version a build uses when none is given: ``RULES_PROMPT_VERSION`` for the
    rules backend when the task has that file, else None (= the highest, see ``load_prompt``)."""
    if backend in PROMPT_FREE_BACKENDS:
        root = Path(prompts_dir) if prompts_dir else default_prompts_dir()
        if (root / task / f"v{RULES_PROMPT_VERSION}.jinja").is_file():
            return RULES_PROMPT_VERSION
    return None


def load_prompt(task: str, version: int | None = None, prompts_dir: Path | None = None) -> Prompt:
    """Load ``<prompts_dir>/<task>/v<version>.jinja`` (highest version if None)."""
    root = Path(prompts_dir) if prompts_dir else default_prompts_dir()
    tdir = root / task
    if not tdir.is_dir():
        known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise PromptError(f"no prompt directory for task {task!r} under {root}; known tasks: {known}")
    if version is None:
        versions = sorted(
            int(p.stem[1:]) for p in tdir.glob("v*.jinja") if p.stem[1:].isdigit()
        )
        if not versions:
            raise PromptError(f"{tdir}: no v<N>.jinja files")
        version = versions[-1]
    path = tdir / f"v{version}.jinja"
    if not path.is_file():
        raise PromptError(f"{path}: no such prompt version")
    p = parse_prompt_file(path)
    if p.name != task or p.version != version:
        raise PromptError(
            f"{path}: front matter says name={p.name!r} version={p.version}, "
            f"file location says {task!r} v{version}"
        )
    return p
