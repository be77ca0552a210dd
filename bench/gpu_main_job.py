"""A fine-tuning recipe, as a user runs it (`python train.py config/finetune_small.py`), measured.

    python bench/gpu_main_job.py --folder=/tmp/gpt2-random --out_dir=/tmp/out --mem_cap_gib=12
    python bench/gpu_main_job.py --config=config/finetune_large.py --folder=/tmp/large --out_dir=/tmp/o2 ...
    python bench/gpu_main_job.py --folder=/tmp/tiny --out_dir=/tmp/out --dry-run   # tiny, on the CPU

"OpenAI's GPT-2" is a random-weight transformers GPT-2 written to --folder, in the shape
of the config's init_from (gpt2, gpt2-medium, ...; tiny with --dry-run), and loaded with
init_from=FOLDER, the same path init_from=gpt2 takes after download. The data is data/shakespeare/ (prepared from
--corpus first if missing). The run's metrics.jsonl is summarised into a JSON
record: steady-state tokens/s, MFU and peak memory (the median over the logged
intervals after the first, which includes compilation), and the losses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import write_result  # noqa: E402

REPO = BENCH.parent


def write_random_gpt2(folder: Path, size: str, tiny: bool) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from nanogpt2.hf.layout import hf_config
    from nanogpt2.model_config import GPTConfig

    shape = GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64) if tiny else GPTConfig.gpt2(size)
    torch.manual_seed(0)
    # Initialising gpt2-xl's 1.56B values takes the CPU most of a minute and a GPU a second; the memory the
    # GPU used for it is returned, and its peak forgotten, before training starts.
    device = "cuda" if torch.cuda.is_available() and not tiny else "cpu"
    with torch.device(device):
        model = GPT2LMHeadModel(GPT2Config(**hf_config(shape)))
    model.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="config/finetune_small.py", help="the recipe to run (relative to the repo)")
    p.add_argument("--folder", required=True, help="where to write the random-weight GPT-2")
    p.add_argument("--out_dir", required=True, help="the training run's folder (checkpoints are GBs: not bench/)")
    p.add_argument("--json", required=True, help="the JSON record to write")
    p.add_argument("--corpus", default=None, help="text file or folder to prepare data/shakespeare from if missing")
    p.add_argument("--max_iters", type=int, default=100)
    p.add_argument("--mem_cap_gib", type=float, default=None)
    p.add_argument("--dry-run", action="store_true", help="tiny model and shapes on the CPU")
    args, extra = p.parse_known_args(argv)  # anything else (--batch_size=8 ...) goes to train.py

    if args.mem_cap_gib and torch.cuda.is_available():
        from nanogpt2.common.runtime import use_expandable_segments

        use_expandable_segments()  # as train.py does, before anything (writing the folder too) starts CUDA
    from nanogpt2.common.configurator import read_config_file

    recipe = read_config_file(REPO / args.config)
    folder = Path(args.folder)
    if not (folder / "config.json").exists():
        write_random_gpt2(folder, recipe.get("init_from", "gpt2"), args.dry_run)
    if args.mem_cap_gib and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.mem_cap_gib * 2**30 / total), 0)
    data = REPO / "data" / "shakespeare"
    overrides = [
        f"--init_from={folder}",
        f"--out_dir={args.out_dir}",
        f"--max_iters={args.max_iters}",
        "--eval_interval=50",
        "--eval_iters=10",
        "--log_interval=5",
    ]
    if args.dry_run:
        data = Path(args.out_dir).with_name("data-tiny")
        overrides = [
            f"--init_from={folder}",
            f"--out_dir={args.out_dir}",
            "--max_iters=4",
            "--eval_interval=2",
            "--eval_iters=1",
            "--log_interval=1",
            "--block_size=32",
            "--batch_size=2",
            "--gradient_accumulation_steps=2",
            "--device=cpu",
            f"--dataset={data}",
        ]
    if not (data / "meta.json").exists():
        from nanogpt2.data import PrepareConfig, prepare

        if args.corpus is None and not args.dry_run:
            sys.exit(f"error: {data} is not prepared: pass --corpus=TEXT_OR_FOLDER")
        if args.corpus is None:  # a few KB of text is enough to train four tiny steps
            args.corpus = str(Path(args.out_dir).with_name("tiny.txt"))
            Path(args.corpus).write_text(" ".join(f"word{i % 97}" for i in range(20000)))
        prepare(PrepareConfig(inputs=[args.corpus], out=str(data), quiet=True), say=lambda *_: None)

    from nanogpt2.train.trainer import train

    overrides += extra
    argv_train = [str(REPO / args.config), *overrides]
    train(argv_train)

    from nanogpt2.train.metrics import read_metrics

    trained, evals = read_metrics(args.out_dir, "train"), read_metrics(args.out_dir, "eval")
    logged = trained[1:] or trained  # the first interval includes compilation

    def med(key):
        values = [r[key] for r in logged if r.get(key) is not None]
        return round(statistics.median(values), 4) if values else None

    result = {
        "name": Path(args.config).stem,
        "tokens_per_sec": med("tokens_per_sec"),
        "mfu": med("mfu"),
        "peak_mem_gib": max((r["peak_mem_gib"] for r in logged if r.get("peak_mem_gib")), default=None),
        "first_loss": logged[0]["loss"],
        "last_loss": logged[-1]["loss"],
        "last_val_loss": evals[-1].get("val_loss") if evals else None,
    }
    settings = {
        "config": args.config,
        "overrides": overrides,
        "mem_cap_gib": args.mem_cap_gib,
        "weights": "random, tiny" if args.dry_run else f"random, {recipe.get('init_from', 'gpt2')}'s shape",
    }
    write_result("main-job", settings, [result], device="cuda" if torch.cuda.is_available() else "cpu", path=args.json)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
