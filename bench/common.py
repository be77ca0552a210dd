"""What every benchmark in bench/ shares: the environment record, timing, one JSON schema.

Each benchmark prints a table and writes a JSON file:

    {
      "bench": "train",                       # which script
      "date": "2026-11-23T12:00:00+00:00",
      "command": "python bench/train.py ...", # how to reproduce
      "env": {"device": ..., "torch": ..., "python": ..., "cpus": ..., "platform": ...},
      "settings": {...},                      # the options the run used
      "results": [{"name": ..., <figures>}, ...]
    }

Results go to bench/results/<bench>-<device>-<date>.json unless --json names a
file, so the folder keeps a history of measured before/after figures.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def environment(device: torch.device | str = "cpu") -> dict:
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU: {_cpu_name()}"
    return {
        "device": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def time_call(
    fn: Callable[[], object], *, warmup: int, repeat: int, sync: Callable[[], None] = lambda: None
) -> list[float]:
    """Seconds per call of fn, `repeat` times after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def print_table(rows: list[dict], columns: Sequence[str] | None = None) -> None:
    """Rows of figures as an aligned text table."""
    if not rows:
        return
    columns = list(columns or rows[0].keys())
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def write_result(
    bench: str, settings: dict, results: list[dict], device: torch.device | str = "cpu", path: str | Path | None = None
) -> Path:
    """Write the benchmark record (schema above) and return its path."""
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    env = environment(device)
    record = {
        "bench": bench,
        "date": now.isoformat(),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "env": env,
        "settings": settings,
        "results": results,
    }
    if path is None:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", env["device"]).strip("-").lower()[:40]
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{bench}-{slug}-{now.strftime('%Y%m%dT%H%M%S')}.json"
    Path(path).write_text(json.dumps(record, indent=2) + "\n")
    return Path(path)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
