"""Progress reporting for long work (data preparation, evaluation, training), and how durations read.

On a terminal this is a tqdm bar. When output goes to a file or a pipe (a job
scheduler's log, `| tee`), a redrawn bar turns into thousands of carriage
returns, so we print a plain line every few seconds instead. Either way the
caller sees one object with tqdm's interface: `update(n)`, `set_postfix_str(s)`,
`write(line, file=stream)` (a line that does not break the bar; tqdm's goes to
stdout unless `file` says otherwise), `close()`, `n`, and iteration over the
wrapped iterable.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO


def is_tty(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return hasattr(stream, "isatty") and stream.isatty()


def format_duration(seconds: float) -> str:
    """A duration as people read it: 0m07s, 12m30s, 3h05m; "?" when unknown (inf or NaN)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def progress(
    iterable: Iterable | None = None,
    *,
    total=None,
    initial=0,
    desc="",
    unit="it",
    file=None,
    disable=False,
    plain_every=10.0,
    **tqdm_options,
):
    """A progress bar over `total` units, starting at `initial`: tqdm on a terminal; elsewhere a plain line
    at most every `plain_every` seconds (0: at every update) and one when done. disable=True prints nothing."""
    file = file or sys.stderr
    if disable:
        return _Silent(iterable)
    if is_tty(file):
        from tqdm.auto import tqdm

        return tqdm(
            iterable, total=total, initial=initial, desc=desc, unit=unit, file=file, dynamic_ncols=True, **tqdm_options
        )
    return PlainProgress(iterable, total=total, initial=initial, desc=desc, unit=unit, file=file, interval=plain_every)


class PlainProgress:
    """The part of tqdm's interface we use, printed as occasional plain lines."""

    def __init__(self, iterable=None, *, total=None, initial=0, desc="", unit="it", file=None, interval=10.0):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.file = file or sys.stderr
        self.interval = interval
        self.n = self._initial = initial
        self.postfix = ""
        self.start: float | None = time.monotonic()  # None once closed
        self._last = self.start

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

    def write(self, s: str, file=None) -> None:
        print(s, file=file or self.file, flush=True)

    def close(self) -> None:
        if self.start is not None:
            self._print(final=True)
            self.start = None

    def _print(self, final: bool = False) -> None:
        elapsed = time.monotonic() - (self.start or 0.0)
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0  # this run's pace, not a resumed one's
        done = f"{self.n:,}/{self.total:,} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n:,}"
        if final:
            when = f"done in {format_duration(elapsed)}"
        else:
            eta = (self.total - self.n) / rate if self.total and rate > 0 else math.inf
            when = f"elapsed {format_duration(elapsed)}, ETA {format_duration(eta)}"
        tail = f" | {self.postfix}" if self.postfix else ""
        self.write(f"{self.desc}: {done} {self.unit}, {rate:,.1f} {self.unit}/s, {when}{tail}")


class _Silent(PlainProgress):
    def __init__(self, iterable=None):
        super().__init__(iterable)

    def _print(self, final: bool = False) -> None:
        pass

    def write(self, s: str, file=None) -> None:
        pass
