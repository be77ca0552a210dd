"""Progress reporting for long work (data preparation, evaluation, training).

On a terminal this is a tqdm bar. When output goes to a file or a pipe (a job
scheduler's log, `| tee`), a redrawn bar turns into thousands of carriage
returns, so we print a plain line every few seconds instead.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TextIO


def is_tty(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return hasattr(stream, "isatty") and stream.isatty()


class PlainProgress:
    """The part of tqdm's interface we use, printed as occasional plain lines."""

    def __init__(self, total=None, desc="", unit="it", file=None, interval=10.0, iterable=None, **_):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file or sys.stderr
        self.interval = interval
        self.iterable = iterable
        self.n = 0
        self.postfix = ""
        self.start = self._last = time.monotonic()

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # failed work gets no "done in" line
            self.start = None

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._print()

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        self.postfix = s

    def write(self, s: str) -> None:
        print(s, file=self.file, flush=True)

    def close(self) -> None:
        if self.start is not None:
            self._print(final=True)
            self.start = None

    def _print(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n:,}/{self.total:,} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n:,}"
        tail = f" | {self.postfix}" if self.postfix else ""
        word = "done in" if final else "elapsed"
        print(f"{self.desc}: {done} {self.unit}, {rate:,.1f} {self.unit}/s, {word} {elapsed:.0f}s{tail}",
              file=self.file, flush=True)


def progress(iterable: Iterable | None = None, *, total=None, desc="", unit="it", disable=False, file=None, **kw):
    """tqdm on a terminal, PlainProgress otherwise. disable=True prints nothing."""
    file = file or sys.stderr
    if not disable and is_tty(file):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, file=file, dynamic_ncols=True, **kw)
    if disable:
        return _Silent(iterable)
    return PlainProgress(total=total, desc=desc, unit=unit, file=file, iterable=iterable, **kw)


class _Silent(PlainProgress):
    def __init__(self, iterable=None):
        super().__init__(iterable=iterable)

    def _print(self, final: bool = False) -> None:
        pass

    def write(self, s: str) -> None:
        pass
