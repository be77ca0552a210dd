"""Stopping a run cleanly: the first Ctrl-C or SIGTERM finishes the step and saves, a second Ctrl-C aborts.

A scheduler that preempts a job sends SIGTERM and waits a grace period before SIGKILL; train.py uses it to
save a checkpoint and exit with 143 (128 + SIGTERM), the shell's convention, so the job can be resumed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current step and save;
    a second Ctrl-C aborts immediately. Handlers are installed only in the main thread."""

    def __init__(self, say: Callable[[str], None] = print):
        self.requested: int | None = None  # the signal's number, once one came
        self.say = say
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum
        self.say(
            f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
            f"(press Ctrl-C again to abort without saving)"
        )
