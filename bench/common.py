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

# The training benchmarks' default shapes: GPT-2 small on a GPU, a small model for a CPU's 2 cores.
GPU_SHAPE = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, batch_size=8)
CPU_SHAPE = dict(n_layer=4, n_head=4, n_embd=256, block_size=256, batch_size=4)


def add_training_args(p) -> None:
    """The arguments every training benchmark takes: the shape (each overriding the device's default),
    --device, --dtype and --compile."""
    for name in GPU_SHAPE:
        p.add_argument(f"--{name}", type=int, default=None, help="default: GPT-2 small on a GPU, a small shape on CPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="autocast dtype: auto, float32, bfloat16 or float16")
    p.add_argument("--compile", default="auto", help="auto (on for CUDA with Triton), true or false")


def training_setup(args):
    """(runtime, model shape, micro-batch, compile?) from add_training_args' arguments; TF32 on CUDA."""
    from nanogpt2.common.runtime import enable_tf32, resolve_runtime, want_compile

    rt = resolve_runtime(args.device, args.dtype)
    defaults = GPU_SHAPE if rt.device_type == "cuda" else CPU_SHAPE
    shape = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    batch_size = shape.pop("batch_size")
    compile_model = want_compile(None if args.compile == "auto" else args.compile.lower() == "true", rt.device)
    if rt.device_type == "cuda":
        enable_tf32()
    return rt, shape, batch_size, compile_model


def environment(device: torch.device | str = "cpu") -> dict:
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU: {_cpu_name()}"
    return {
        "device": name,
        "cpu": _cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the vector instructions torch uses: AVX2, ...
        "cpu_bf16_native": _bf16_native(),  # AVX512-BF16 or AMX: what the screened head needs to pay
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


def _bf16_native() -> bool:
    from nanogpt2.fast.screened_head import bf16_matmuls_are_native

    return bf16_matmuls_are_native()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
