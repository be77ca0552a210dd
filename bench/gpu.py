"""Every measurement only a GPU can take, in one command, each saved the moment it is taken.

    python bench/gpu.py                          # the whole suite on cuda:0
    python bench/gpu.py --only=main,train        # some steps
    python bench/gpu.py --dry-run                # the same steps with tiny shapes on the CPU (the tests run this)

GPUs are lent rarely and briefly, so the suite needs nothing from the network and
nothing beyond torch, tiktoken, transformers, safetensors and huggingface_hub:
- "OpenAI's GPT-2" is a random-weight transformers GPT-2 folder written on the spot
  (speed and memory do not depend on the values), loaded through the same
  `init_from=FOLDER` path as `init_from=gpt2`;
- the main job's Shakespeare is the prepared data/shakespeare/ if present, or else is
  prepared from --corpus (any text file or folder).

Each step runs in its own process with its own time limit, in the order below (most
wanted first), and writes its JSON record into --out as soon as it ends, so a
time-out or a crash loses only the step it hit. suite.json lists every step's status
and is rewritten after each. The suite ends with a markdown table for the README.

Steps:
  main     python train.py config/finetune_small.py under a 12 GiB cap (an RTX 4070 Ti's size):
           loss, tokens/s, MFU and peak memory from its metrics.jsonl
  large    the same for config/finetune_large.py (gpt2-large, bf16 weights, 8-bit AdamW; needs torchao)
  xl_full  the same for config/finetune_xl_full.py (gpt2-xl, every weight: bf16 weights, 8-bit AdamW)
  xl_lora  the same for config/finetune_xl_lora.py (gpt2-xl, LoRA adapters on a bf16 base)
  train    bench/train.py, GPT-2 124M, T=1024, bf16, compiled: ours vs transformers
  memory   bench/memory.py: measured peak against nanogpt2.flops.memory's estimate, every case
  eager    bench/train.py uncompiled (transformers' Trainer default)
  sample   bench/sample.py on CUDA: ours with the KV cache vs transformers' generate
  autotune bench/train.py, ours compiled with mode max-autotune-no-cudagraphs (compare with "train")
  chunked  bench/train.py, ours compiled with the chunked LM head + loss (compare with "train")
  loss     bench/loss.py under bf16 autocast: our chunked loss against torch's F.linear_cross_entropy
  pairs    bench/pairs_attention.py: packed examples kept apart by the dense mask vs FlexAttention, 124M
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CAP_GIB = 12  # an RTX 4070 Ti
# suite step -> a 12 GB recipe run under the cap: (config, the random-weight folder's GPT-2 shape, overrides).
# The gpt2-xl recipes run a few steps of 8 micro-steps (the peak is the same as with 32; compile takes minutes).
RECIPES = {
    "large": ("config/finetune_large.py", "gpt2-large", ["--max_iters", "30"]),
    "xl_full": ("config/finetune_xl_full.py", "gpt2-xl", ["--max_iters", "6", "--gradient_accumulation_steps=8"]),
    "xl_lora": ("config/finetune_xl_lora.py", "gpt2-xl", ["--max_iters", "6", "--gradient_accumulation_steps=8"]),
}
STEPS = (
    "main",
    *RECIPES,
    "train",
    "memory",
    "eager",
    "sample",
    "autotune",
    "chunked",
    "loss",
    "pairs",
)  # in the order they run: most wanted first


def steps(work: Path, out: Path, dry: bool) -> dict[str, tuple[list[str], int]]:
    """name -> (command, seconds allowed). --dry-run swaps in tiny shapes on the CPU."""
    py = sys.executable
    cap = ["--mem_cap_gib", str(CAP_GIB)] if not dry else []

    def recipe_job(name: str, config: str, size: str, extra: list[str]) -> list[str]:
        job = [py, str(BENCH / "gpu_main_job.py"), "--config", config, "--folder", str(work / f"{size}-random")]
        job += ["--out_dir", str(work / f"out-{name}"), "--json", str(out / f"{name}.json")]
        return job + (["--dry-run"] if dry else cap + extra)

    tiny_train = [
        "--device=cpu",
        "--n_layer=2",
        "--n_head=2",
        "--n_embd=64",
        "--block_size=32",
        "--batch_size=2",
        "--warmup=1",
        "--steps=1",
        "--rounds=1",
    ]
    return {
        "main": (recipe_job("main", "config/finetune_small.py", "gpt2", []), 240),
        **{name: (recipe_job(name, *recipe), 300) for name, recipe in RECIPES.items()},
        "train": (
            [py, str(BENCH / "train.py"), "--json", str(out / "train-compiled.json")]
            + (tiny_train + ["--compile=false"] if dry else ["--compile=true"]),
            240,
        ),
        "memory": (
            [py, str(BENCH / "memory.py"), "--json", str(out / "memory.json")] + (["--cases=small-b1"] if dry else []),
            480,  # the 8-bit recipes compile torchao's update for each parameter shape
        ),
        "eager": (
            [py, str(BENCH / "train.py"), "--json", str(out / "train-eager.json"), "--compile=false"]
            + (tiny_train if dry else []),
            120,
        ),
        "autotune": (
            [
                py,
                str(BENCH / "train.py"),
                "--json",
                str(out / "train-autotune.json"),
                "--impl=ours",
                "--compile_mode=max-autotune-no-cudagraphs",
            ]
            + (tiny_train + ["--compile=false"] if dry else ["--compile=true"]),
            300,
        ),
        "chunked": (
            [
                py,
                str(BENCH / "train.py"),
                "--json",
                str(out / "train-chunked.json"),
                "--impl=ours",
                "--loss_chunk_tokens=" + ("16" if dry else "2048"),
            ]
            + (tiny_train + ["--compile=false"] if dry else ["--compile=true"]),
            180,
        ),
        "loss": (
            [py, str(BENCH / "loss.py"), "--json", str(out / "loss.json")]
            + (
                ["--rows=64", "--width=16", "--vocab=500", "--chunk=16", "--rounds=1", "--repeat=1"]
                if dry
                else ["--device=cuda", "--rows=8192", "--width=768", "--chunk=2048", "--dtype=bfloat16"]
            ),
            120,
        ),
        "pairs": (
            [py, str(BENCH / "pairs_attention.py"), "--json", str(out / "pairs.json")]
            + (
                ["--device=cpu", "--n_layer=1", "--n_embd=32", "--n_head=2", "--block_size=32", "--batch_size=2"]
                + ["--compile=false", "--rounds=1", "--steps=1", "--mean_example=8"]
                if dry
                else ["--device=cuda"]
            ),
            180,
        ),
        "sample": (
            [
                py,
                str(BENCH / "sample.py"),
                "--json",
                str(out / "sample.json"),
                "--modes=kv-cache,transformers",
                "--new_tokens",
                "8" if dry else "200",
            ]
            + (["--device=cpu"] if dry else ["--repeat=3"]),
            90,
        ),
    }


def run_step(name: str, cmd: list[str], limit: int, out: Path) -> dict:
    """Run one step in its own process; its output goes to OUT/NAME.log."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        try:
            rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=limit).returncode
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {limit} s"
    return {"step": name, "status": status, "seconds": round(time.perf_counter() - start, 1), "command": " ".join(cmd)}


def table(out: Path) -> str:
    """A markdown table of the headline figures, from the records the steps wrote."""
    lines = ["| what | figure |", "| --- | --- |"]
    for path in sorted(out.glob("*.json")):
        if path.name == "suite.json":
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for row in record.get("results", []):
            figures = ", ".join(f"{k} {v}" for k, v in row.items() if k != "name" and v is not None)
            lines.append(f"| {path.stem}: {row.get('name', '')} | {figures} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="folder for the records (default: bench/results/gpu-<time>/)")
    p.add_argument("--only", default=None, help="comma-separated steps to run (default: all, in order)")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: checks the suite, measures nothing")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(STEPS)
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        print(f"error: unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}", file=sys.stderr)
        return 2
    out = Path(args.out or BENCH / "results" / time.strftime("gpu-%Y%m%dT%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nanogpt2-gpu-"))
    plan = steps(work, out, args.dry_run)
    done = []
    try:
        for name in names:
            cmd, limit = plan[name]
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[1:])}", flush=True)
            done.append(run_step(name, cmd, limit, out))
            print(f"  {done[-1]['status']} in {done[-1]['seconds']} s (log: {out / (name + '.log')})", flush=True)
            (out / "suite.json").write_text(json.dumps({"dry_run": args.dry_run, "steps": done}, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(out))
    return 0 if all(d["status"] == "ok" for d in done) else 1


if __name__ == "__main__":
    sys.exit(main())
