"""The LM head + cross-entropy, five ways: time and peak memory of one forward and backward.

    python bench/loss.py                                  # CPU: 1024 positions of width 256, V = 50,257
    python bench/loss.py --rows=1024 --width=768 --rounds=5
    python bench/loss.py --device=cuda --rows=8192 --width=768 --chunk=2048 --dtype=bfloat16

The last step of a GPT is logits = x W^T (N x V) and their cross-entropy; for GPT-2's 50,257 tokens
it makes the largest tensors of the step. The ways, each giving the same loss and gradients:

    plain          F.linear + F.cross_entropy, as model.py's logits_and_loss
    chunked        GPT.chunked_loss (model.py): loss_chunk_tokens rows at a time, each checkpointed
    fused          nanogpt2/fast/fused_loss.py: one (N, V) buffer, the gradient formed in place (CPU training)
    torch          torch.nn.functional.linear_cross_entropy (torch >= 2.13), its reference path
    torch-chunked  the same with options=LinearCrossEntropyOptions(batch_chunk_size=--chunk), its chunked path

Time: the median over alternating rounds, so that background load hits every way alike, with the
ratio to plain taken round by round (paired). Memory: the peak of the tensors made during the forward
and backward, the gradients of x and W included, measured (CPU: torch's MemTracker on the real
tensors; CUDA: max_memory_allocated). Prints a table and writes a JSON record to bench/results/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nanogpt2 import GPT, GPTConfig  # noqa: E402
from nanogpt2.fast.fused_loss import lm_head_loss  # noqa: E402

from common import median, print_table, time_call, write_result  # noqa: E402

WAYS = ("plain", "chunked", "fused", "torch", "torch-chunked")


def loss_functions(V: int, chunk: int, model: GPT) -> dict:
    """way -> f(x, W, targets) giving the mean cross-entropy of x W^T, -1 targets ignored."""
    ways = {
        "plain": lambda x, w, t: F.cross_entropy(F.linear(x, w), t, ignore_index=-1),
        "chunked": lambda x, w, t: model.chunked_loss(x, t),  # model.lm_head.weight is w
        "fused": lambda x, w, t: lm_head_loss(x, w, t, V),
    }
    if hasattr(F, "linear_cross_entropy"):  # torch >= 2.13
        options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk)
        ways["torch"] = lambda x, w, t: F.linear_cross_entropy(x, w, t, ignore_index=-1)
        ways["torch-chunked"] = lambda x, w, t: F.linear_cross_entropy(x, w, t, ignore_index=-1, options=options)
    return ways


def _under_autocast(fn, device_type: str, dtype: torch.dtype):
    """fn run under autocast, as the training loop runs the model."""

    def run(x, w, t):
        with torch.autocast(device_type, dtype=dtype):
            return fn(x, w, t)

    return run


def peak_bytes(loss_fn, x: torch.Tensor, w: torch.Tensor, device: torch.device) -> int:
    """Peak bytes of live tensors while loss_fn() and its backward run, beyond those alive before."""
    x.grad = w.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        loss_fn().backward()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    with tracker:
        # Inside a module: MemTracker refuses a module (the chunks' lm_head) called twice at the top level.
        Call(loss_fn)().backward()
    return tracker.get_tracker_snapshot("peak")[device]["Total"]


class Call(torch.nn.Module):
    """A module whose forward runs fn()."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self):
        return self.fn()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1024, help="positions N (batch x block_size)")
    p.add_argument("--width", type=int, default=256, help="hidden width C")
    p.add_argument("--vocab", type=int, default=50257, help="vocabulary V")
    p.add_argument("--chunk", type=int, default=256, help="rows per chunk for chunked and torch-chunked")
    p.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, from {', '.join(WAYS)}")
    p.add_argument("--rounds", type=int, default=5, help="alternating timed rounds")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per way per round")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", help="autocast dtype (bfloat16, float16) or float32 (none)")
    p.add_argument("--json", default=None, help="result file (default: bench/results/loss-<device>-<date>.json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    N, C, V = args.rows, args.width, args.vocab

    g = torch.Generator().manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=C, block_size=8, vocab_size=V)).to(device)
    model.loss_chunk_tokens = args.chunk
    w = model.lm_head.weight  # (V, C), the tied embedding
    with torch.no_grad():
        w.copy_(0.5 * torch.randn(V, C, generator=g) / C**0.5)  # logits of a realistic spread
    x = torch.randn(N, C, generator=g).to(device).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=g).to(device)
    targets[: N // 16] = -1  # some ignored positions, as padding makes them
    available = loss_functions(V, args.chunk, model)
    autocast = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    if autocast is not None:  # the fused loss is fp32 only: under autocast the model keeps the plain path
        available = {
            name: _under_autocast(fn, device.type, autocast) for name, fn in available.items() if name != "fused"
        }
    ways = [way for way in args.ways.split(",") if way in available]
    skipped = [way for way in args.ways.split(",") if way not in available]
    if skipped:
        print(f"not available in torch {torch.__version__}: {', '.join(skipped)}")

    def step(way: str):
        def run() -> None:
            x.grad = w.grad = None
            available[way](x, w, targets).backward()

        return run

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    reference = None
    agreement = {}
    for way in ways:  # warm-up, and each way's loss and gradients against plain
        step(way)()
        got = (available[way](x, w, targets).detach(), x.grad.clone(), w.grad.clone())
        reference = reference or got
        agreement[way] = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, reference))
    memory = {way: peak_bytes(lambda way=way: available[way](x, w, targets), x, w, device) for way in ways}
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(args.rounds):
        for way in ways:
            times[way].append(median(time_call(step(way), warmup=0, repeat=args.repeat, sync=sync)))

    logits_bytes = N * V * 4
    rows = []
    for way in ways:
        rows.append(
            {
                "name": way,
                "ms": round(1e3 * median(times[way]), 2),
                "paired_vs_plain": round(median([b / t for t, b in zip(times[way], times[ways[0]])]), 3),
                "peak_mib": round(memory[way] / 2**20, 1),
                "peak_in_logits": round(memory[way] / logits_bytes, 2),
                "max_rel_diff_vs_plain": agreement[way],
            }
        )
    print(f"N={N} x C={C} -> V={V}, chunks of {args.chunk}, {torch.get_num_threads()} threads on {device}")
    print_table(rows)
    settings = {
        "rows": N,
        "width": C,
        "vocab": V,
        "chunk": args.chunk,
        "rounds": args.rounds,
        "repeat": args.repeat,
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "times_s": {way: [round(t, 4) for t in ts] for way, ts in times.items()},
        "not_available": skipped,
    }
    path = write_result("loss", settings, rows, device=device, path=args.json)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
