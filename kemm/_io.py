"""Atomic file writes and durable appends: the one place kemm writes files safely.

Every whole-file write goes to a uniquely named temporary file in the target's folder,
is flushed and fsync'd, then renamed over the target with ``os.replace``. A reader
therefore sees the old file or the new one, never a torn one, and a crash at any
instant leaves no partial target (at most a hidden ``.<name>.*.tmp`` file).
Appends are one ``write`` on an ``O_APPEND`` descriptor followed by fsync.
Files are created with the user's umask, like any other tool's output.

Imports: the standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    For writers that need a file name (``torch.save``, ``safetensors``, ``DataFrame.to_csv``).
    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically and durably."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON (UTF-8, sorted keys untouched) atomically and durably."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def atomic_write_with(path: Path | str, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result over ``path`` atomically and durably."""
    with atomic_path(path) as tmp:
        writer(tmp)


class DurableAppender:
    """Append whole lines to a file: one ``write`` per line on an ``O_APPEND`` fd, then fsync.

    Concurrent readers see whole lines or, after a crash, a torn last line that the
    reader must detect; never an interleaving of two lines.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def append_line(self, line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode("utf-8")
        n = os.write(self.fd, data)
        if n != len(data):  # pragma: no cover - disk full
            raise OSError(f"short write to {self.path} ({n} of {len(data)} bytes)")
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> DurableAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (model weights, imported files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
