"""Progress display: a tqdm bar on a terminal, plain lines in a log.

Under ``nohup``, in CI or with output piped to a file, a redrawn bar writes a carriage return
for every update (hundreds of kilobytes for one training run). :func:`progress` draws a tqdm
bar only when standard error is a terminal; otherwise it prints one plain line per
:data:`LOG_EVERY_PERCENT` percent of the work (and at the end), e.g.::

    epoch 3/8: 40% (24/60) 12.1s loss=1.2034

The object returned supports what the library uses of tqdm: iteration, ``update``,
``set_postfix``, ``close`` and use as a context manager.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress", "LOG_EVERY_PERCENT"]

LOG_EVERY_PERCENT = 10
"""Without a terminal, a line is printed each time this many percent more are done."""


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _LineProgress:
    """Plain-text progress: a line per :data:`LOG_EVERY_PERCENT` percent, to standard error."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.n = 0
        self.postfix = ""
        self._next_mark = LOG_EVERY_PERCENT
        self._t0 = time.perf_counter()
        self._closed = False

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("this progress display was made without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self) -> _LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self) -> str:
        elapsed = time.perf_counter() - self._t0
        done = f"{100 * self.n // self.total}% ({self.n}/{self.total})" if self.total else f"{self.n}"
        return f"{self.desc}: {done} {elapsed:.1f}s" + (f" {self.postfix}" if self.postfix else "")

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total:
            if 100 * self.n >= self._next_mark * self.total and self.n < self.total:
                print(self._line(), file=sys.stderr, flush=True)
                while 100 * self.n >= self._next_mark * self.total:
                    self._next_mark += LOG_EVERY_PERCENT
        elif self.n % 100 == 0:
            print(self._line(), file=sys.stderr, flush=True)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = " ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n:
                print(self._line(), file=sys.stderr, flush=True)


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    disable: bool = False,
    unit: str = "it",
):
    """A progress display over ``iterable`` (or updated by hand up to ``total``).

    Args:
        iterable: what to iterate over (optional).
        total: number of updates expected (default ``len(iterable)``).
        desc: what is being done, shown first.
        disable: show nothing.
        unit: the unit of the tqdm bar.
    """
    if disable or not _is_terminal(sys.stderr):
        if disable:
            return tqdm(iterable, total=total, disable=True)
        return _LineProgress(iterable, total, desc)
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, unit=unit)
