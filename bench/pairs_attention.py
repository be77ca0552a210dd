"""Packed examples: what keeping them apart costs a training step, with the dense mask and with FlexAttention.

    python bench/pairs_attention.py --device=cuda            # GPT-2 124M, T=1024, bf16, compiled
    python bench/pairs_attention.py --device=cpu --n_layer=2 --n_embd=64 --block_size=64 --compile=false

Three models with the same weights take a forward and backward pass over the same batches of
packed windows (examples of random lengths, as data/pairs_prepare.py packs them):

    causal  no example masking: SDPA's causal kernel, the cost of plain text (the floor)
    dense   example masking through a (B, 1, T, T) boolean mask (model.py; SDPA's masked kernel)
    flex    example masking through FlexAttention's block mask (fast/flex.py; CUDA only, compiled)

Rounds alternate between the variants and ratios are paired per round. The record also holds
the largest difference between dense's and flex's losses (they compute the same function).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nanogpt2.common.runtime import resolve_runtime  # noqa: E402
from nanogpt2.fast.flex import for_cuda_training  # noqa: E402
from nanogpt2.model import GPT, GPTConfig  # noqa: E402

from common import median, print_table, write_result  # noqa: E402


def packed_batch(B: int, T: int, vocab: int, mean_example: int, gen: torch.Generator, device) -> tuple:
    """(x, y, examples): random ids, a third of the targets ignored (prompts), examples of random lengths."""
    x = torch.randint(0, vocab, (B, T), generator=gen)
    y = torch.randint(0, vocab, (B, T), generator=gen)
    y[torch.rand(B, T, generator=gen) < 1 / 3] = -1
    starts = torch.rand(B, T, generator=gen) < 1 / mean_example
    starts[:, 0] = True
    return x.to(device), y.to(device), starts.cumsum(1).to(device)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--n_layer", type=int, default=12)
    p.add_argument("--n_head", type=int, default=12)
    p.add_argument("--n_embd", type=int, default=768)
    p.add_argument("--block_size", type=int, default=1024)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--mean_example", type=int, default=200, help="mean tokens per packed example")
    p.add_argument("--compile", default="true", choices=("true", "false"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant per round")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rt = resolve_runtime(args.device, "auto")
    cfg = GPTConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=args.block_size)
    torch.manual_seed(0)
    base = GPT(cfg).to(rt.device)
    models = {"causal": base, "dense": base}
    if rt.device_type == "cuda" and args.compile == "true":
        models["flex"] = for_cuda_training(copy.deepcopy(base))
    else:
        print("flex skipped: FlexAttention trains only on CUDA, compiled")
    if args.compile == "true":
        models = {k: torch.compile(m) for k, m in models.items()}
    gen = torch.Generator().manual_seed(0)
    batches = [
        packed_batch(args.batch_size, args.block_size, cfg.vocab_size, args.mean_example, gen, rt.device)
        for _ in range(4)
    ]

    def step(name: str, batch) -> float:
        x, y, examples = batch
        with rt.autocast():
            _, loss = models[name](x, y, examples=None if name == "causal" else examples)
        loss.backward()
        return float(loss)

    losses = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in models:  # warm-up: compilation, and the losses of batch 0 to compare
            losses[name] = step(name, batches[0])
            step(name, batches[1])
        times: dict[str, list[float]] = {name: [] for name in models}
        for r in range(args.rounds):
            for name in models if r % 2 == 0 else reversed(list(models)):
                if rt.device_type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for s in range(args.steps):
                    step(name, batches[s % len(batches)])
                if rt.device_type == "cuda":
                    torch.cuda.synchronize()
                times[name].append((time.perf_counter() - t0) / args.steps)
    tokens = args.batch_size * args.block_size
    rows = []
    for name in models:
        paired = median([a / b for a, b in zip(times[name], times["causal"])])
        rows.append(
            {
                "name": name,
                "ms_per_step": round(1e3 * median(times[name]), 2),
                "tokens_per_s": round(tokens / median(times[name])),
                "time_vs_causal_paired": round(paired, 3),
                "loss_batch0": round(losses[name], 5),
            }
        )
    print_table(rows)
    settings = {
        **vars(args),
        "dtype": str(rt.dtype),
        "flex_minus_dense_loss": losses.get("flex", losses["dense"]) - losses["dense"],
    }
    path = write_result("pairs-attention", settings, rows, device=rt.device, path=args.json)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
