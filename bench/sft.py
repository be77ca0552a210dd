"""Does masking teach a model to answer and stop? A synthetic pair task, trained masked and unmasked.

    python bench/sft.py                       # 2 seeds x 2 variants, about 10 minutes on 2 CPU cores
    python bench/sft.py --seeds 1 --max_iters 200
    python bench/sft.py --variants=loss_mask_only,example_masking_only

The task: a prompt lists 3 to 5 words ("Reverse: red cat sun"), and the answer is the list
reversed ("sun cat red"). The held-out pairs are word lists never seen in training, so an
exact match needs the rule, not memory. Both variants train the same small GPT from scratch
on the same prepared windows, in the same order, for the same steps:

    masked     the defaults for pair data: the loss over answers and their <|endoftext|> only, and
               attention inside each example, positions from 0 (loss_mask, example_masking)
    unmasked   every token a target and examples seeing each other (loss_mask=False,
               example_masking=False): what training on the same text as plain text would do
    loss_mask_only, example_masking_only   one of the two on (--variants=...: which half matters)

Each trained model then answers the held-out prompts greedily (nanogpt2.evaluate's answers
task): exact_match counts answers equal to the reference followed by <|endoftext|>, stopped
those that wrote <|endoftext|> at all. Seeds alternate between the variants, and the record
keeps every run, with the paired difference per seed.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nanogpt2.data import PrepareConfig, prepare  # noqa: E402
from nanogpt2.evaluate.cli import evaluate  # noqa: E402
from nanogpt2.train.trainer import train  # noqa: E402

from common import print_table, write_result  # noqa: E402

WORDS = "red green blue cat dog sun moon tree fish bird".split()  # one GPT-2 token each, after a space
VARIANTS = {
    "masked": [],
    "unmasked": ["--loss_mask=False", "--example_masking=False"],
    "loss_mask_only": ["--example_masking=False"],  # the two halves of "masked", each alone
    "example_masking_only": ["--loss_mask=False"],
}


def make_pairs(n_train: int, n_test: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Disjoint train and test pairs (no test word list appears in training)."""
    rng = np.random.default_rng(seed)
    seen: set[tuple[str, ...]] = set()
    out: list[tuple[str, str]] = []
    while len(out) < n_train + n_test:
        words = tuple(rng.choice(WORDS, size=int(rng.integers(3, 6))))
        if words not in seen:
            seen.add(words)
            out.append((f"Reverse: {' '.join(words)}", " ".join(reversed(words))))
    return out[:n_train], out[n_train:]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "completion"])
        writer.writerows(rows)
    return path


def run_variant(args, name: str, seed: int, data: Path, test: Path, folder: Path) -> dict:
    out = folder / f"{name}-{seed}"
    shape = [f"--n_layer={args.n_layer}", f"--n_head={args.n_head}", f"--n_embd={args.n_embd}"]
    t0 = time.perf_counter()
    train(
        [
            "--init_from=scratch", *shape, f"--block_size={args.block_size}", f"--batch_size={args.batch_size}",
            f"--max_iters={args.max_iters}", "--eval_interval=0", f"--learning_rate={args.lr}", "--warmup_iters=20",
            "--dropout=0", f"--seed={seed}", "--device=cpu", "--compile=False", f"--log_interval={args.max_iters}",
            f"--dataset={data}", f"--out_dir={out}", *VARIANTS[name],
        ]
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    record = evaluate([f"--init_from={out}", "--task=answers", f"--data={test}", "--device=cpu", "--batch_size=32"])
    return {"variant": name, "seed": seed, "train_s": round(seconds, 1), **record["results"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=2, help="training seeds, each run with both variants")
    p.add_argument("--max_iters", type=int, default=400)
    p.add_argument("--n_layer", type=int, default=2)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=128)
    p.add_argument("--block_size", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--train_pairs", type=int, default=4000)
    p.add_argument("--test_pairs", type=int, default=200)
    p.add_argument("--variants", default="masked,unmasked", help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--json", default=None, help="where to write the record (default: bench/results/)")
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    if any(v not in VARIANTS for v in variants):
        p.error(f"--variants: choose from {', '.join(VARIANTS)}")
    train_rows, test_rows = make_pairs(args.train_pairs, args.test_pairs)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        test = write_csv(folder / "test.csv", test_rows)
        data = folder / "data"
        prepare(
            PrepareConfig(
                inputs=[str(write_csv(folder / "train.csv", train_rows))],
                out=str(data),
                prompt_column="prompt",
                block_size=args.block_size,
                val_fraction=0.05,
                quiet=True,
            )
        )
        for seed in range(args.seeds):
            order = variants if seed % 2 == 0 else variants[::-1]  # alternate which runs first
            for name in order:
                runs.append(run_variant(args, name, seed, data, test, folder))
                print_table([runs[-1]])

    def result(seed: int, name: str) -> float:
        return next(r["exact_match"] for r in runs if r["seed"] == seed and r["variant"] == name)

    paired = [  # each variant against the first, seed by seed
        {
            "seed": seed,
            "variant": name,
            f"exact_match_minus_{variants[0]}": result(seed, name) - result(seed, variants[0]),
        }
        for seed in range(args.seeds)
        for name in variants[1:]
    ]
    rows = [
        {
            "variant": name,
            "exact_match": float(np.mean([r["exact_match"] for r in runs if r["variant"] == name])),
            "stopped": float(np.mean([r["stopped"] for r in runs if r["variant"] == name])),
            "answer_nats_per_token": float(np.mean([r["answer_nats_per_token"] for r in runs if r["variant"] == name])),
            "train_s": float(np.mean([r["train_s"] for r in runs if r["variant"] == name])),
        }
        for name in variants
    ]
    print_table(rows)
    print_table(paired)
    settings = {**vars(args), "task": "reverse 3-5 of 10 words; test word lists unseen in training"}
    path = write_result("sft-reversal", {**settings, "runs": runs, "paired": paired}, rows, path=args.json)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
