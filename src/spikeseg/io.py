"""Crash-safe file writing: temp file → fsync → rename → fsync of the folder; file hashing.

Every file spikeseg writes into a run directory (config, metrics, checkpoints, resume state,
reports) goes through :func:`atomic_write`: the content is written to a temporary file beside
the target (``.NAME.<random>.tmp``), flushed to disk, renamed over the target with
:func:`os.replace` (atomic on POSIX), and the folder's entry is flushed too. A kill at any
instant leaves either the old file or the new one, never a mixture; what a kill can leave
behind is a stale ``.*.tmp`` file, which :func:`remove_stale_temp_files` cleans.
:func:`file_sha256` fingerprints a file a run depends on (an imported checkpoint, a teacher).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "file_sha256",
           "fsync_dir", "remove_stale_temp_files", "TEMP_SUFFIX"]

TEMP_SUFFIX = ".tmp"


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, hex, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries to disk (so a rename inside it survives a power cut)."""
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Create ``path`` atomically: ``write(tmp_path)`` fills a temp file that then replaces it.

    Args:
        path: the target file (its folder is created if needed).
        write: called with the temp file's path; must write the whole content there.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the ``.*.tmp`` files an interrupted :func:`atomic_write` left in ``folder``.

    Only call it while no other process writes into ``folder`` (under the run's lock).
    """
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(f".*{TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed
