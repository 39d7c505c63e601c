"""Content-addressed, append-only knowledge cache with provenance.

Layout::

    <cache_dir>/<source>/manifest.json    identity (task, prompt, schema, backend, model,
                                          sampling) + counts + timestamps + kemm version
    <cache_dir>/<source>/records.jsonl    one JSON line per generation attempt set
    <cache_dir>/<source>/.lock            held (flock) while a build writes

The record key is ``sha256`` of everything that shapes the output (see
:func:`record_key`).  A record is appended with a single ``write`` on an
``O_APPEND`` descriptor and fsync'd, so a build killed at any instant leaves at
most one torn last line; :meth:`SourceCache.load` reports and ignores torn or
corrupt lines, and the build regenerates them.  When a key appears more than
once the last complete line wins; failures are never served as hits.

Every record written through :meth:`SourceCache.writer` carries the sha256 of the
identity in the manifest at the time (:func:`identity_sha`).  Reading the records
(:meth:`SourceCache.load` and everything built on it: ``show``, ``audit``, ``diff``,
``embed``, the model's readers) refuses a source whose manifest no longer matches the
identity its records were written under, so an edited or swapped ``manifest.json`` can
never present one backend's output as another model's; ``ls`` marks such a source.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kemm import __version__
from kemm._io import DurableAppender, atomic_write_text
from kemm.knowledge.errors import KnowledgeError
from kemm.knowledge.records import CacheRecord

_SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
IDENTITY_KEYS = (
    "task",
    "prompt_name",
    "prompt_version",
    "prompt_sha",
    "schema_name",
    "schema_sha",
    "backend",
    "model_id",
    "model_revision",
    "sampling",
)


class CacheError(KnowledgeError):
    """A source that is missing, misnamed, locked or built with another configuration."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("KEMM_CACHE_DIR", "knowledge_cache"))


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def record_key(identity: dict[str, Any], input_text: str) -> str:
    """Key of one record: sha256 over the source identity and the input text."""
    ident = {k: identity.get(k) for k in IDENTITY_KEYS}
    return hashlib.sha256(canonical_json({"identity": ident, "input": input_text}).encode()).hexdigest()


def identity_sha(identity: dict[str, Any]) -> str:
    """sha256 of the identity fields of a manifest (what every record is stamped with)."""
    return sha256_text(canonical_json({k: identity.get(k) for k in IDENTITY_KEYS}))


def validate_source_name(source: str) -> str:
    if not isinstance(source, str) or not _SOURCE_RE.match(source) or ".." in source:
        raise CacheError(
            f"invalid source name {source!r}: use 1-128 characters from letters, digits, '.', '_' "
            "and '-', starting with a letter or digit, with no '..' (it names a folder inside the cache)"
        )
    return source


@dataclass
class LoadReport:
    records: dict[str, CacheRecord] = field(default_factory=dict)  # key -> last record
    corrupt_lines: list[int] = field(default_factory=list)  # 1-based line numbers
    n_lines: int = 0
    foreign: int = 0  # records stamped with an identity other than the manifest's


class SourceCache:
    """One knowledge source: a folder with a manifest and a JSONL of records."""

    def __init__(self, cache_dir: Path | str, source: str):
        self.cache_dir = Path(cache_dir)
        self.source = validate_source_name(source)
        self.dir = (self.cache_dir / source).resolve()
        root = self.cache_dir.resolve()
        if root not in self.dir.parents:
            raise CacheError(f"source {source!r} resolves outside the cache directory {root}")
        self.manifest_path = self.dir / "manifest.json"
        self.records_path = self.dir / "records.jsonl"

    # -- manifest ---------------------------------------------------------------
    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> dict[str, Any]:
        if not self.exists():
            raise CacheError(
                f"no knowledge source {self.source!r} in {self.cache_dir} "
                f"(expected {self.manifest_path}); `kemm-knowledge ls` lists the sources"
            )
        try:
            man = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CacheError(f"{self.manifest_path}: not valid JSON ({e})") from None
        if not isinstance(man, dict) or not isinstance(man.get("identity", {}), dict):
            raise CacheError(f"{self.manifest_path}: expected a JSON object whose 'identity' is an object; "
                             "restore the manifest kemm wrote, or rebuild into a new --source")
        return man

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")

    def ensure_identity(self, identity: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create the manifest, or check that an existing one has the same identity.

        Refuses (``CacheError``) to mix outputs of a different prompt, schema, backend,
        model or sampling into one source: a new source name keeps both for ablations.
        """
        if self.exists():
            man = self.read_manifest()
            diffs = [
                f"{k}: cache has {man.get('identity', {}).get(k)!r}, this build has {identity.get(k)!r}"
                for k in IDENTITY_KEYS
                if canonical_json(man.get("identity", {}).get(k)) != canonical_json(identity.get(k))
            ]
            if diffs:
                raise CacheError(
                    f"source {self.source!r} in {self.cache_dir} was built with a different configuration:\n  "
                    + "\n  ".join(diffs)
                    + "\nUse a new --source name to keep both (e.g. for an ablation)."
                )
            return man
        man = {
            "source": self.source,
            "identity": {k: identity.get(k) for k in IDENTITY_KEYS},
            "provenance": extra or {},
            "kemm_version": __version__,
            "created": now_iso(),
            "updated": now_iso(),
            "counts": {},
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        self.write_manifest(man)
        return man

    # -- records ----------------------------------------------------------------
    def load(self) -> LoadReport:
        """Every complete record line (the last line of a key wins).

        Raises ``CacheError`` when records were written under another identity than the
        manifest states (``ls`` uses the cheaper :meth:`identity_problem` instead).
        """
        rep = LoadReport()
        if not self.records_path.is_file():
            return rep
        expected = self._manifest_identity_sha()
        with open(self.records_path, "rb") as f:
            for i, line in enumerate(f, start=1):
                rep.n_lines = i
                if not line.strip():
                    continue
                rec = _parse_line(line)
                if rec is None:
                    rep.corrupt_lines.append(i)
                    continue
                # Re-insert so the dict's order is that of each key's LAST line: by_case() and the
                # embedding store then pick the newest record of a case whose input changed.
                rep.records.pop(rec.key, None)
                rep.records[rec.key] = rec
                if expected and rec.identity_sha and rec.identity_sha != expected:
                    rep.foreign += 1
        if rep.foreign:
            raise CacheError(self._mismatch_message(rep.foreign, rep.n_lines))
        return rep

    def _manifest_identity_sha(self) -> str | None:
        """The manifest's identity sha (None without a manifest); a malformed manifest is a CacheError."""
        if not self.exists():
            return None
        return identity_sha(self.read_manifest().get("identity") or {})

    def _mismatch_message(self, n_foreign: int, n_lines: int) -> str:
        ident = (self.read_manifest().get("identity") or {}) if self.exists() else {}
        return (
            f"{self.manifest_path}: the manifest does not match its records ({n_foreign} of {n_lines} record lines "
            f"were written under another identity than the stated backend {ident.get('backend')!r}, model "
            f"{ident.get('model_id')!r}, prompt {ident.get('prompt_name')!r} v{ident.get('prompt_version')}); "
            "it was edited or replaced after the build. Restore the original manifest.json, or rebuild into a new "
            "--source"
        )

    def identity_problem(self) -> str | None:
        """Cheap check for ``ls``: does the first stamped record match the manifest? A message, or None."""
        expected = self._manifest_identity_sha()
        if not expected or not self.records_path.is_file():
            return None
        with open(self.records_path, "rb") as f:
            for line in f:
                rec = _parse_line(line)
                if rec is not None and rec.identity_sha:
                    return None if rec.identity_sha == expected else self._mismatch_message(1, 1)
        return None

    def iter_records(self) -> Iterator[CacheRecord]:
        yield from self.load().records.values()

    def by_case(self) -> dict[str, CacheRecord]:
        """Last-written record per case id (a case has several keys only when its input changed)."""
        out: dict[str, CacheRecord] = {}
        for rec in self.iter_records():
            out[rec.case_id] = rec
        return out

    def ok_by_case(self) -> dict[str, CacheRecord]:
        """Last-written record per case id, only where it is ok: what embeddings and covariates serve."""
        return {cid: rec for cid, rec in self.by_case().items() if rec.status == "ok"}

    def records_generation(self) -> str:
        """Content identity of what the source serves now (see :func:`records_generation`)."""
        return records_generation(self.ok_by_case())

    @contextlib.contextmanager
    def writer(self, identity: dict[str, Any] | None = None) -> Iterator[RecordWriter]:
        """The appender, under the source's lock. ``identity``: what the caller builds under; each
        record is stamped with it, and a manifest that (no longer) states it is refused under the lock
        (two first builds of one new source with different settings cannot mix)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = open(self.dir / ".lock", "w")
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CacheError(f"source {self.source!r} is being written by another process") from None
            self._repair_torn_tail()
            stated = self._manifest_identity_sha()
            stamp = identity_sha(identity) if identity is not None else stated
            if identity is not None and stated is not None and stamp != stated:
                raise CacheError(
                    f"{self.manifest_path} states another identity than this build's (backend "
                    f"{identity.get('backend')!r}, model {identity.get('model_id')!r}): another build or an edit changed "
                    "it; use a new --source name"
                )
            w = RecordWriter(self.records_path, stamp)
            try:
                yield w
            finally:
                w.close()
        finally:
            lock.close()

    def _repair_torn_tail(self) -> None:
        """Terminate a torn last line so the next append starts on a fresh line."""
        p = self.records_path
        if p.is_file() and p.stat().st_size > 0:
            with open(p, "rb") as f:
                f.seek(-1, os.SEEK_END)
                last = f.read(1)
            if last != b"\n":
                with open(p, "ab") as f:
                    f.write(b"\n")
                    f.flush()
                    os.fsync(f.fileno())

    def update_counts(self, extra_provenance: dict[str, Any] | None = None) -> dict[str, Any]:
        rep = self.load()
        counts: dict[str, int] = {"ok": 0, "failed": 0, "skipped": 0}
        for rec in rep.records.values():
            counts[rec.status] = counts.get(rec.status, 0) + 1
        counts["records"] = len(rep.records)
        counts["lines"] = rep.n_lines
        counts["corrupt_lines"] = len(rep.corrupt_lines)
        man = self.read_manifest()
        man["counts"] = counts
        man["updated"] = now_iso()
        man["kemm_version"] = __version__
        if extra_provenance:
            man.setdefault("provenance", {}).update(extra_provenance)
        self.write_manifest(man)
        return man


class RecordWriter:
    """Appends records to ``records.jsonl``: one ``write`` per line on an ``O_APPEND`` fd, fsync'd.

    Each record is stamped with ``identity_sha`` (the manifest's identity when the writer opened).
    """

    def __init__(self, path: Path, identity: str | None = None):
        self._out = DurableAppender(path)
        self._identity = identity

    def append(self, record: CacheRecord) -> None:
        if self._identity is not None and record.identity_sha != self._identity:
            record = record.model_copy(update={"identity_sha": self._identity})
        self._out.append_line(record.to_line())

    def close(self) -> None:
        self._out.close()


def records_generation(ok: dict[str, CacheRecord]) -> str:
    """sha256 over (case id, record key, output sha) of every served record, in case-id order.

    Any rebuild that changes what a case's knowledge says (new input, regenerated output, a
    record that now failed) changes it; a rebuild with nothing changed keeps it.
    """
    h = hashlib.sha256()
    for cid in sorted(ok):
        rec = ok[cid]
        h.update(canonical_json([cid, rec.key, sha256_text(canonical_json(rec.output))]).encode())
        h.update(b"\n")
    return h.hexdigest()


def _parse_line(line: bytes) -> CacheRecord | None:
    """A complete, valid record line, or None (torn tail, not JSON, not a record)."""
    if not line.endswith(b"\n"):
        return None  # torn last line
    try:
        return CacheRecord.model_validate_json(line)
    except (ValidationError, UnicodeDecodeError):
        return None


def list_sources(cache_dir: Path | str) -> list[dict[str, Any]]:
    root = Path(cache_dir)
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        m = d / "manifest.json"
        if d.is_dir() and m.is_file():
            try:
                man = json.loads(m.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                out.append({"source": d.name, "error": f"{m}: not valid JSON"})
                continue
            if not isinstance(man, dict) or not isinstance(man.get("identity", {}), dict):
                out.append({"source": d.name, "error": f"{m}: 'identity' is not an object"})
                continue
            with contextlib.suppress(CacheError):  # names kemm would refuse are listed, not checked
                problem = SourceCache(root, d.name).identity_problem()
                if problem:
                    man["identity_problem"] = problem
            out.append(man)
    return out
