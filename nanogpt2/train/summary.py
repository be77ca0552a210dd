"""The end of a run: what it reached, where its files are, and the commands that use them.

Printed after the last step (or a stop) and written as the last row of metrics.jsonl
(kind "summary"), so a script can read a run's outcome without parsing the log:

    best_val_loss, best_step   the lowest validation loss logged in the whole run, and its step
    step, tokens               where the run is, and the tokens trained on to get there
    wall_seconds               this invocation's time (a resumed run counts from its resume)
    mean_tokens_per_sec, mean_mfu   over this invocation's logged steps (None where not measured)
    checkpoints, plot          the run's ckpt.pt and best.pt, where they exist, and its curves.png
    sample, resume             the commands that sample from the run and continue it
"""

from __future__ import annotations

import shlex
from pathlib import Path

from nanogpt2.common.progress import format_duration
from nanogpt2.train.checkpoint import BEST, LATEST
from nanogpt2.train.metrics import read_metrics


def run_summary(out_dir: Path, step: int, tokens_per_step: int, since_step: int, wall_seconds: float) -> dict:
    """The summary row of the run in out_dir, from its metrics.jsonl and files (see the module docstring)."""
    rows = read_metrics(out_dir) if (out_dir / "metrics.jsonl").is_file() else []
    evals = [r for r in rows if r["kind"] == "eval" and r.get("val_loss") is not None]
    best = min(evals, key=lambda r: r["val_loss"]) if evals else None
    now = [r for r in rows if r["kind"] == "train" and r["step"] > since_step]

    def mean(key: str) -> float | None:
        values = [r[key] for r in now if r.get(key) is not None]
        return sum(values) / len(values) if values else None

    folder = shlex.quote(str(out_dir))
    return {
        "best_val_loss": best["val_loss"] if best else None,
        "best_step": best["step"] if best else None,
        "step": step,
        "tokens": step * tokens_per_step,
        "wall_seconds": round(wall_seconds, 1),
        "mean_tokens_per_sec": mean("tokens_per_sec"),
        "mean_mfu": mean("mfu"),
        "checkpoints": [str(out_dir / name) for name in (LATEST, BEST) if (out_dir / name).is_file()],
        "sample": f"python sample.py --init_from={folder}",
        "resume": f"python train.py --init_from=resume --out_dir={folder} --max_iters=MORE",
    }


def summary_lines(s: dict, step: int) -> list[str]:
    """The summary (without its step, which the row holds as every row does) as console lines."""
    best = (
        f"best val loss {s['best_val_loss']:.4f} at step {s['best_step']}"
        if s["best_val_loss"] is not None
        else "no evaluation"
    )
    speed = f"{s['mean_tokens_per_sec']:,.0f} tok/s" if s["mean_tokens_per_sec"] else "no step timed"
    mfu = f", MFU {s['mean_mfu']:.1%}" if s["mean_mfu"] is not None else ""
    return [
        f"done: step {step:,}, {s['tokens']:,} tokens; {best}; {format_duration(s['wall_seconds'])} at {speed}{mfu}"
        f" (mean)",
        f"  checkpoints: {', '.join(s['checkpoints']) or 'none'}" + (f"; curves: {s['plot']}" if s.get("plot") else ""),
        f"  sample: {s['sample']}",
        f"  resume: {s['resume']}",
    ]
