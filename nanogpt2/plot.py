"""`python -m nanogpt2.plot RUN [RUN ...] --out curves.png`: a run's curves, from its metrics.jsonl alone.

    python -m nanogpt2.plot out-shakespeare                                # writes out-shakespeare/curves.png
    python -m nanogpt2.plot out-adamw out-muon --out compare.png --ref "GPT-2 124M=3.29"

The picture, for one run or several overlaid (one colour each, a legend naming them):

    loss             the training loss (a thin line) and the validation loss (dots) against tokens seen,
                     with --ref lines (NAME=LOSS) to compare against, e.g. OpenAI's GPT-2
    learning rate    the schedule as it ran
    tokens/s         the measured throughput
    evaluation tasks any task a run scored during training (train.py --eval_tasks), e.g. HellaSwag

train.py draws out_dir/curves.png as it goes when matplotlib is installed (CurvesDuringTraining:
--plot=True at every evaluation, the default at most every minute and at the end of runs that long,
--plot=False never). matplotlib is the optional extra `pip install 'nanogpt2[plot]'`, drawn headless (Agg).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from nanogpt2.errors import UserError, run_main
from nanogpt2.train.metrics import read_metrics

LOSS_KEYS = {"train_loss", "val_loss", "val_ppl", "best_val_loss"}  # eval-row figures that are not tasks


def available() -> bool:
    """Whether matplotlib is installed (train.py plots only then)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def tokens_per_step(run: Path) -> int:
    """Tokens per optimizer step, from the run's saved config.json (1 if it has none: steps on the x-axis)."""
    try:
        cfg = json.loads((run / "config.json").read_text())
        return int(cfg["batch_size"]) * int(cfg["block_size"]) * int(cfg["gradient_accumulation_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1


def parse_ref(text: str) -> tuple[str, float]:
    name, sep, value = text.rpartition("=")
    try:
        return (name.strip() or value), float(value)
    except ValueError:
        raise UserError(f"--ref {text!r}: write NAME=LOSS, e.g. --ref 'GPT-2 124M=3.29'") from None


def plot_runs(runs: Sequence[str | Path], out: str | Path, refs: Sequence[tuple[str, float]] = ()) -> Path:
    """Draw the runs' curves into the PNG `out`; returns its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plotting needs matplotlib: pip install 'nanogpt2[plot]'") from None
    data = []
    for run in map(Path, runs):
        if not (run / "metrics.jsonl").is_file():
            raise UserError(f"{run} has no metrics.jsonl: give a training run's out_dir")
        data.append((run, read_metrics(run), tokens_per_step(run)))
    tasks = sorted(
        {k for _, rows, _ in data for r in rows if r["kind"] == "eval" for k in r}
        - LOSS_KEYS
        - {"kind", "step", "time"}
    )
    panels = 3 + bool(tasks)
    heights = [2, 1, 1] + [1.2] * bool(tasks)
    fig, axes = plt.subplots(panels, 1, figsize=(8, 2 + 2 * panels), sharex=True, squeeze=False, height_ratios=heights)
    loss, lr, speed = axes[0][0], axes[1][0], axes[2][0]
    for k, (run, rows, tps) in enumerate(data):
        color, label = f"C{k % 10}", run.name or str(run)
        train_rows = [r for r in rows if r["kind"] == "train"]
        evals = [r for r in rows if r["kind"] == "eval"]

        def x(rs: list[dict], key: str, tps: int = tps) -> tuple[list[float], list[float]]:
            kept = [r for r in rs if r.get(key) is not None]
            return [r["step"] * tps for r in kept], [r[key] for r in kept]

        loss.plot(*x(train_rows, "loss"), color=color, alpha=0.45, linewidth=1, label=f"{label} train")
        loss.plot(*x(evals, "val_loss"), "o-", color=color, markersize=3, label=f"{label} val")
        lr.plot(*x(train_rows, "lr"), color=color)
        speed.plot(*x(train_rows, "tokens_per_sec"), color=color)
        for task in tasks:
            axes[3][0].plot(*x(evals, task), "o-", color=color, markersize=3, label=f"{label} {task}")
    for name, value in refs:
        loss.axhline(value, color="gray", linestyle="--", linewidth=1)
        loss.annotate(name, (0, value), xycoords=("axes fraction", "data"), fontsize=8, color="gray", va="bottom")
    loss.set_ylabel("loss (nats/token)")
    lr.set_ylabel("learning rate")
    speed.set_ylabel("tokens/s")
    loss.legend(fontsize=8)
    if tasks:
        axes[3][0].set_ylabel("evaluation tasks")
        axes[3][0].legend(fontsize=8)
    axes[-1][0].set_xlabel("tokens seen" if all(tps > 1 for _, _, tps in data) else "steps")
    for (ax,) in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)  # a viewer never sees a half-written picture
    return out


class CurvesDuringTraining:
    """train.py's out_dir/curves.png. setting: True draws at every evaluation and at the end; None (the default)
    does so only when matplotlib is installed and a minute has passed since the run started or last drew, so
    that short runs pay nothing; False never. A picture that fails to draw is said once, never fatal."""

    EVERY_SECONDS = 60.0

    def __init__(self, out_dir: Path, setting: bool | None, now: float) -> None:
        self.path, self.setting, self.last = out_dir / "curves.png", setting, now
        self.on = setting is True or (setting is None and available())
        self.failed = False

    def maybe_draw(self, now: float, say) -> Path | None:
        """Draw if it is time; returns the picture's path when there is one."""
        due = self.setting is True or now - self.last >= self.EVERY_SECONDS
        if self.on and due and not self.failed:
            try:
                plot_runs([self.path.parent], self.path)
            except Exception as e:  # a plot must never stop a run
                self.failed = True
                say(f"note: could not draw {self.path} ({type(e).__name__}: {e}); training goes on without it")
            self.last = now
        return self.path if self.path.is_file() else None


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nanogpt2.plot", description="Plot training runs' curves.")
    p.add_argument("runs", nargs="+", help="training out_dirs (each with its metrics.jsonl)")
    p.add_argument("--out", help="the PNG to write (default: RUN/curves.png for one run, curves.png for several)")
    p.add_argument("--ref", action="append", default=[], help="a reference loss line, NAME=LOSS (repeatable)")
    args = p.parse_args(argv)
    out = args.out or (Path(args.runs[0]) / "curves.png" if len(args.runs) == 1 else "curves.png")
    path = plot_runs(args.runs, out, [parse_ref(r) for r in args.ref])
    print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
