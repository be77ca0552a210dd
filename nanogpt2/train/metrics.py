"""Where training reports go: the console, out_dir/metrics.jsonl, and optionally wandb.

Every record is one JSON object per line in metrics.jsonl, always, so a run
can be plotted or compared without any service. On a terminal the console
shows progress.py's bar (tqdm) whose postfix carries the latest figures; in a
log file it prints one line per report instead, with every figure and the ETA
(richer than a generic progress line, which only counts steps). Weights & Biases is used only when
asked for (wandb_log=True) and is imported only then; it works offline with
WANDB_MODE=offline (runs are synced later with `wandb sync`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from nanogpt2.common.files import atomic_write
from nanogpt2.common.progress import is_tty, progress
from nanogpt2.errors import UserError, plural


def read_metrics(out_dir: str | Path, kind: str | None = None) -> list[dict]:
    """The records a run's MetricsLogger wrote to out_dir/metrics.jsonl, oldest first; only those of one
    kind ("train", "eval", ...) if given. For plotting, comparing and benchmarking runs."""
    rows = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    return rows if kind is None else [r for r in rows if r["kind"] == kind]


class MetricsLogger:
    def __init__(
        self,
        out_dir: str | Path,
        *,
        enabled: bool,
        total_steps: int,
        start_step: int = 0,
        wandb_config: dict | None = None,
        stream=None,
        write_file: bool = True,
    ):
        """enabled=False (processes other than rank 0) makes every method a no-op; write_file=False keeps the
        console and writes no metrics.jsonl (train.py --eval_only=True, which leaves out_dir alone)."""
        self.enabled = enabled
        self.write_file = write_file
        self.stream = stream or sys.stdout
        self.path = Path(out_dir) / "metrics.jsonl"
        self._wandb = None
        self._bar = None
        if not enabled:
            return
        if wandb_config is not None:
            self._wandb = _start_wandb(wandb_config)
        if is_tty(self.stream):
            self._bar = progress(total=total_steps, initial=start_step, unit="step", file=self.stream)

    def record(self, kind: str, step: int, **figures) -> None:
        """Append {"kind", "step", "time", **figures} to metrics.jsonl (and wandb)."""
        if not self.enabled:
            return
        # A NaN or infinity is not JSON: such a figure is written as null (the run says so on the console).
        figures = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in figures.items()}
        row = {"kind": kind, "step": step, "time": round(time.time(), 3), **figures}
        if self.write_file:
            with open(self.path, "a") as f:
                f.write(json.dumps(row, allow_nan=False) + "\n")
        if self._wandb is not None:
            self._wandb.log({f"{kind}/{k}": v for k, v in figures.items() if isinstance(v, (int, float))}, step=step)

    def drop_rows_after(self, step: int) -> int:
        """Remove the records of steps after `step` (a crashed run logged them; a resumed run redoes them).
        Returns how many were removed. The file is rewritten whole and replaced atomically."""
        if not self.enabled or not self.path.is_file():
            return 0
        lines = self.path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _step_of(line) <= step]
        if len(kept) < len(lines):
            with atomic_write(self.path, "w") as f:
                f.write("".join(kept))
        return len(lines) - len(kept)

    def print(self, line: str) -> None:
        """A line on the console that does not break the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def progress(self, step: int, summary: str, line: str) -> None:
        """Move the bar to `step` with `summary` as its postfix; without a bar, print `line`."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix_str(summary, refresh=True)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
            import wandb

            # finish() returns before wandb's service has written everything; teardown waits for it, so a
            # caller reading the (offline) run right after train() returns sees all of it.
            if hasattr(wandb, "teardown"):
                wandb.teardown()


def _step_of(line: str) -> float:
    """The step of a metrics.jsonl line; a line cut short by a crash counts as past every step."""
    try:
        return json.loads(line).get("step", 0)
    except ValueError:
        return math.inf


def _start_wandb(cfg: dict):
    try:
        import wandb
    except ImportError:
        raise UserError(
            "wandb_log=True but wandb is not installed: pip install wandb (or set wandb_log=False)"
        ) from None
    return wandb.init(project=cfg["project"], name=cfg["name"], config=cfg["config"], dir=cfg["dir"])


def peak_for_mfu(
    device_type: str, device_name: str | None, dtype: str, peak_tflops: float | None = None
) -> tuple[float | None, str]:
    """(peak FLOP/s that MFU is measured against, or None when unknown; what that peak is, in words).

    The setting peak_tflops wins; otherwise the detected GPU's dense peak for the run's dtype
    (bf16/fp16 tensor cores, TF32 for float32 runs; the table and sources are in flops/hardware.py)."""
    from nanogpt2.flops.hardware import detect_gpu

    if peak_tflops is not None:
        return peak_tflops * 1e12, "peak_tflops setting"
    if device_type != "cuda":
        return None, f"{device_type} (no peak FLOP/s known: MFU n/a)"
    spec = detect_gpu(device_name or "")
    if spec is not None and spec.peak_flops(dtype):
        return spec.peak_flops(dtype), f"{spec.name}, dense {dtype} peak"
    return None, f"{device_name} (unknown GPU: MFU n/a; set peak_tflops to enable it)"


def describe_run(
    *,
    params: int,
    n_layer: int,
    n_head: int,
    n_embd: int,
    block_size: int,
    source: str,
    resumed_at: int | None,
    data_path: str,
    train_tokens: int,
    val_tokens: int,
    batch_size: int,
    accumulation: int,
    processes: int,
    device: str,
    compiled: bool,
    peak_name: str,
    allocator: str | None,
) -> list[str]:
    """The run's header: what model, what data, how many tokens per step, where, and against what peak."""
    tokens_per_step = batch_size * block_size * accumulation
    lines = [
        f"model {params / 1e6:.1f}M parameters ({n_layer} layers, {n_head} heads, width {n_embd}, "
        f"context {block_size}) from {source}" + (f" at step {resumed_at}" if resumed_at is not None else ""),
        f"data {data_path}: {train_tokens:,} train / {plural(val_tokens, 'val token')}; {tokens_per_step:,} tokens per "
        f"step = {batch_size} x {block_size} x {accumulation} accumulation ({processes} process(es))",
        f"device {device}, compile {'on' if compiled else 'off'}, peak for MFU: {peak_name}",
    ]
    if allocator:
        lines.append(f"CUDA allocator: {allocator}")
    return lines
