"""The run directory: one writer at a time, crash-safe files, metrics keyed by epoch.

A training run owns ``out_dir/name/``::

    .lock                     held (flock) by the process writing the run; holds its pid
    config.yaml               what actually runs (rewritten when a resume changes a setting)
    resumes.jsonl             one line per resume that changed settings: what, from, to, when
    metrics.csv               one row per completed epoch, rewritten whole (never appended)
    checkpoints/...           see spikeseg.engine.train

Guarantees:

* **One writer.** :class:`RunLock` takes an exclusive ``flock`` on ``.lock`` and writes its
  pid and host into it. A second process (a second ``--resume`` of a run still training) is
  refused with the holder's pid. The operating system releases the lock when its process
  dies, so the lock of a killed run is taken over without anyone deleting files.
* **Atomic files.** Everything is written by :func:`spikeseg.io.atomic_write` (temp → fsync →
  rename → fsync of the folder); temp files a kill left behind are removed when the lock is
  taken.
* **Metrics keyed by epoch.** The rows live in the resume state; ``metrics.csv`` is rewritten
  from them, so a kill between the two never duplicates or loses a row.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import SpikesegError
from ..io import atomic_write_text, remove_stale_temp_files

__all__ = ["RunLock", "write_metrics", "append_resume_record", "METRIC_FIELDS"]

METRIC_FIELDS = [
    "epoch", "lr", "train_loss", "train_pixel_accuracy", "val_miou", "val_pixel_accuracy",
    "val_mean_accuracy", "epoch_seconds",
]


class RunLock:
    """An exclusive lock on a run directory, held for the life of a training process.

    Args:
        run_dir: the run directory (created if needed).

    Raises:
        SpikesegError: another live process holds the lock (naming its pid and host).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise SpikesegError(
                f"run {self.path.parent} is being written by {holder}; wait for it to finish "
                "or stop it, then --resume"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        os.fsync(fd)
        self._fd = fd
        for folder in (self.path.parent, self.path.parent / "checkpoints",
                       self.path.parent / "report"):
            remove_stale_temp_files(folder)
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def write_metrics(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write ``metrics.csv`` from ``rows`` (one per epoch, sorted by epoch; atomically)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in sorted(rows, key=lambda r: int(r["epoch"])):
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_FIELDS})
    atomic_write_text(path, buf.getvalue())


def append_resume_record(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Add one JSON line to ``resumes.jsonl`` (rewritten atomically with the old lines)."""
    path = Path(run_dir) / "resumes.jsonl"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    atomic_write_text(path, old + json.dumps(record, sort_keys=True) + "\n")
