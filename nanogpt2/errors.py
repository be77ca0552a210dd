"""One exception type for mistakes a user can fix, the commonest check, and the wrapper that reports it.

Library code raises `UserError` (or a subclass) with a message that names the
problem and the fix; `check_positive_int` is the one home of "a size must be a
positive integer", and `some` of how a long list is cut short in a message.
Entry points (`train.py`, `sample.py`, `data/prepare.py`, `python -m nanogpt2.flops`,
...) run their `main` through `run_main`, which
prints such an error as one line on stderr and exits with status 2 instead of
showing a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence


class UserError(Exception):
    """Bad input, bad configuration or a missing file: the message says what to do."""


def check_positive_int(name: str, value: object) -> int:
    """`value` if it is an integer of at least 1; otherwise a UserError naming the setting `name`.
    (A bool is refused although Python counts it as an int: batch_size=True is a mistake.)"""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{name} must be a positive integer (1, 2, 3, ...), got {value!r}")
    return value


def plural(n: int, noun: str) -> str:
    """n and the noun, in the plural unless n is 1: "1 token", "2,048 tokens", "0 documents"."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def some(names: list[str], limit: int = 5) -> str:
    """The first `limit` names, and how many more: "a, b, c and 4 more" (for messages about long lists)."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler's time limit, `kill`): unwind like Ctrl-C, so that every atomic write
    deletes its temporary file, and exit 143 (128 + 15, the shell's convention)."""


def _terminate(signum, frame) -> None:
    raise Terminated


def run_main(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> None:
    """Call `main(argv)` and turn a `UserError` into `error: ...` and exit status 2, SIGTERM into a clean
    exit 143. (train.py handles SIGTERM itself while it trains: it saves a checkpoint first.)"""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        main(argv)
    except Terminated:
        print("terminated", file=sys.stderr)
        sys.exit(143)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once, without a traceback
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `python train.py --help | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(0)
