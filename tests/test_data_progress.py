"""Progress off a terminal (a log file, a pipe): plain lines, never a redrawn bar, and durations people read."""

from __future__ import annotations

import io
import math

import pytest

from nanogpt2.common.progress import format_duration, progress


@pytest.mark.parametrize(
    "seconds, text", [(7.9, "0m07s"), (750, "12m30s"), (3 * 3600 + 301, "3h05m"), (math.inf, "?"), (math.nan, "?")]
)
def test_format_duration(seconds, text):
    """Durations read as minutes and seconds, or hours and minutes; an unknown one as '?'."""
    assert format_duration(seconds) == text


def test_plain_lines_count_from_initial_and_end_with_done():
    """With plain_every=0 each update prints one line, counting from `initial` (a resumed run), with the
    postfix and an ETA; closing prints one 'done in' line; nothing contains a carriage return."""
    log = io.StringIO()  # not a terminal
    bar = progress(total=10, initial=4, desc="train", unit="step", file=log, plain_every=0)
    for step in (5, 6):
        bar.set_postfix_str(f"loss {step}")
        bar.update(1)
    bar.write("an eval line")
    bar.close()
    lines = log.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "train: 5/10 (50%) step",
        "train: 6/10 (60%) step",
        "an eval line",
        "train: 6/10 (60%) step",
    ]
    assert "ETA" in lines[0] and lines[1].endswith("| loss 6") and "done in" in lines[3]
    assert "\r" not in log.getvalue()


def test_disabled_progress_prints_nothing():
    """disable=True (quiet, or a process other than rank 0) prints neither progress nor written lines."""
    log = io.StringIO()
    with progress(total=3, file=log, disable=True, plain_every=0) as bar:
        bar.update(3)
        bar.write("hidden")
    assert log.getvalue() == ""
