"""Does training with bf16 weights lose quality? Validation-loss curves of the same run, four ways.

    python bench/bf16_quality.py                       # about 10 minutes on two CPU cores
    python bench/bf16_quality.py --lrs=3e-5 --steps=200

A small GPT (2 layers x 64, Shakespeare) trained from the same random start, with the same data,
seed and constant learning rate, by:

  fp32      PyTorch's AdamW, fp32 weights and moments (the reference)
  fp32-8bit torchao's AdamW8bit on fp32 weights (what optimizer=adamw8bit changes alone)
  bf16-sr   param_dtype=bfloat16: bf16 weights and gradients, 8-bit moments, stochastic rounding
  bf16-rtn  the same, rounding each update to nearest (stochastic_rounding=False)

at a pretraining-sized learning rate (1e-3) and a fine-tuning-sized one (1e-4). Adam moves a
weight by about the learning rate per step. Stored in bf16, a weight w can only take values
2^-8 |w| apart (8 significant bits), so rounding to nearest throws away every update below
2^-9 |w|: at lr 1e-4 that is every weight above 0.05 in size. Stochastic rounding keeps them on
average (Zamirai et al. 2020, "Revisiting BFloat16 Training"). The curves go to a JSON record
and a markdown table for the README.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import print_table, write_result  # noqa: E402

REPO = BENCH.parent
VARIANTS = {
    "fp32": ["--optimizer=adamw"],
    "fp32-8bit": ["--optimizer=adamw8bit"],
    "bf16-sr": ["--optimizer=adamw8bit", "--param_dtype=bfloat16"],
    "bf16-rtn": ["--optimizer=adamw8bit", "--param_dtype=bfloat16", "--stochastic_rounding=False"],
}


def val_curve(out: Path) -> list[tuple[int, float]]:
    from nanogpt2.train.metrics import read_metrics

    return [(r["step"], r["val_loss"]) for r in read_metrics(out, "eval")]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=str(REPO / "data" / "shakespeare"), help="a prepared dataset folder")
    p.add_argument("--lrs", default="1e-3,1e-4", help="comma-separated constant learning rates")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--eval_every", type=int, default=20)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from nanogpt2.train.trainer import train

    shape = ["--n_layer=2", "--n_head=2", "--n_embd=64", "--pad_vocab_multiple=64", "--block_size=64"]
    common = [*shape, "--batch_size=8", "--device=cpu", "--compile=False", "--eval_iters=10", "--log_interval=50"]
    common += [f"--dataset={args.dataset}", "--init_from=scratch", "--lr_schedule=constant", "--warmup_iters=5"]
    common += [f"--max_iters={args.steps}", f"--eval_interval={args.eval_every}"]
    work = Path(tempfile.mkdtemp(prefix="bf16-quality-"))
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    results = []
    for lr in args.lrs.split(","):
        curves[lr] = {}
        for name, variant in VARIANTS.items():
            out = work / f"{name}-{lr}"
            with contextlib.redirect_stdout(io.StringIO()):
                train([*common, f"--learning_rate={lr}", f"--out_dir={out}", *variant])
            curves[lr][name] = val_curve(out)
            print(f"lr {lr} {name}: " + " ".join(f"{loss:.4f}" for _, loss in curves[lr][name]), flush=True)
        reference = curves[lr]["fp32"]
        for name, curve in curves[lr].items():
            results.append(
                {
                    "name": f"{name} lr {lr}",
                    "final_val_loss": round(curve[-1][1], 4),
                    "vs_fp32": round(curve[-1][1] - reference[-1][1], 4),
                    "gain_vs_fp32": round((curve[0][1] - curve[-1][1]) / (reference[0][1] - reference[-1][1]), 3),
                }
            )
    print_table(results)
    for lr, by_name in curves.items():
        print(f"\nlr {lr}\n| step | " + " | ".join(by_name) + " |\n| --- |" + " --- |" * len(by_name))
        for i, (step, _) in enumerate(by_name["fp32"]):
            print(f"| {step} | " + " | ".join(f"{c[i][1]:.4f}" for c in by_name.values()) + " |")
    settings = {**vars(args), "common": common, "variants": VARIANTS, "curves": curves}
    path = write_result("bf16-quality", settings, results, path=args.json)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
