"""One real optimizer step of a big-GPT-2 recipe on the CPU, from a random-weight folder, with its peak RAM.

    python bench/cpu_step.py                                   # config/finetune_xl_full.py, 256 tokens
    python bench/cpu_step.py --config=config/finetune_large.py --block_size=128

Proof that the 12 GB recipes for the big GPT-2s are real code paths and not only arithmetic:
`python train.py CONFIG` runs as a user runs it (loading a transformers GPT-2 folder exactly as
init_from=NAME does after download, bf16 cast, 8-bit AdamW with stochastic rounding, activation
checkpointing, chunked loss, evaluation and the checkpoint), for one optimizer step of one micro-batch,
on the CPU. The folder is written by a child process (transformers' random init of 1.56B fp32
parameters), so the peak resident memory recorded (ru_maxrss) is the training process's alone: it
includes the fp32 weights read from the folder before the cast. The sequence is shortened (a CPU step
of 1024 tokens takes many minutes on two cores); memory at full length is bench/memory.py's business.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import write_result  # noqa: E402

REPO = BENCH.parent


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="config/finetune_xl_full.py")
    p.add_argument("--block_size", type=int, default=256)
    p.add_argument("--dataset", default=str(REPO / "data" / "shakespeare"))
    p.add_argument("--work", default=None, help="folder for the random weights and the run (default: a temp dir)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from nanogpt2.common.configurator import read_config_file

    size = read_config_file(REPO / args.config).get("init_from", "gpt2-xl")  # the GPT-2 the recipe fine-tunes
    work = Path(args.work or tempfile.mkdtemp(prefix="cpu-step-"))
    folder, out = work / f"{size}-random", work / "out"
    shutil.rmtree(out, ignore_errors=True)
    if not (folder / "config.json").exists():
        start = time.perf_counter()
        code = "import sys; from pathlib import Path; from gpu_main_job import write_random_gpt2; "
        code += "write_random_gpt2(Path(sys.argv[1]), sys.argv[2], False)"
        subprocess.run([sys.executable, "-c", code, str(folder), size], cwd=BENCH, check=True)
        print(f"wrote {folder} in {time.perf_counter() - start:.0f} s", flush=True)

    from nanogpt2.train.trainer import train

    overrides = [
        f"--init_from={folder}",
        f"--out_dir={out}",
        f"--dataset={args.dataset}",
        "--device=cpu",
        "--compile=False",
        f"--block_size={args.block_size}",
        "--gradient_accumulation_steps=1",
        "--max_iters=1",
        "--eval_interval=1",
        "--eval_iters=1",
        "--log_interval=1",
        "--warmup_iters=1",
    ]
    start = time.perf_counter()
    train([str(REPO / args.config), *overrides])
    seconds = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

    from nanogpt2.train.metrics import read_metrics

    train_rows, evals = read_metrics(out, "train"), read_metrics(out, "eval")
    result = {
        "name": Path(args.config).stem,
        "steps": len(train_rows),
        "loss": train_rows[-1]["loss"] if train_rows else None,
        "val_loss_before": evals[0].get("val_loss") if evals else None,
        "val_loss_after": evals[-1].get("val_loss") if evals else None,
        "seconds_total": round(seconds, 1),
        "peak_rss_gib": round(peak_rss / 2**30, 2),
        "checkpoint_gib": round((out / "ckpt.pt").stat().st_size / 2**30, 2) if (out / "ckpt.pt").exists() else None,
    }
    settings = {"config": args.config, "overrides": overrides, "weights": f"random, {size}'s shape (transformers)"}
    path = write_result("cpu-step", settings, [result], path=args.json)
    print(json.dumps(result), f"\nwrote {path}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
