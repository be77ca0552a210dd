"""GPU memory of fine-tuning steps: measured peak against nanogpt2.flops.memory's estimate. NEEDS A CUDA GPU.

    python bench/memory.py                       # every case below, eager, on cuda:0
    python bench/memory.py --cases=small-b8,medium-b2 --compile

For each case it builds the GPT-2 shape with random weights (memory does not depend
on the values), then runs training steps exactly as nanogpt2/trainer.py does: for
each micro-batch, forward under autocast keeping only the loss, loss /
accumulation, backward; then gradient clipping, fused AdamW, zero_grad(set_to_none).
The first step allocates AdamW's moments; the peak is measured over the steps after
it (torch.cuda.max_memory_allocated, the steady state the estimate describes) and
compared with estimate_training_memory(...).peak. The goal is agreement within
+-15%. Cases the estimate says do not fit are still run: a CUDA out-of-memory
error is recorded as such, which checks the "fits" verdict from the other side.

It also records the memory the CUDA context takes outside PyTorch's allocator
(compare memory.CUDA_CONTEXT_BYTES) and the allocator's reserved peak (compare
memory.ALLOCATOR_SLACK). torch.compile (--compile) is not what the estimate models;
its figures show how much less a compiled model needs.

On a machine without CUDA it refuses with one line: there is nothing to measure.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch.nn.attention import SDPBackend, sdpa_kernel

from common import print_table, write_result
from nanogpt2 import GPT, GPTConfig
from nanogpt2.errors import UserError, run_main
from nanogpt2.flops.memory import ALLOCATOR_SLACK, CUDA_CONTEXT_BYTES, estimate_training_memory
from nanogpt2.optim import make_optimizer
from nanogpt2.runtime import enable_tf32, resolve_runtime

GiB = 2**30


@dataclass(frozen=True)
class Case:
    model: str
    batch_size: int
    seq_len: int = 1024
    dropout: float = 0.1  # the fine-tune configs' setting
    grad_accum: int = 2  # >1: gradients are held through later micro-steps, as in config/finetune_*.py
    checkpointing: bool = False
    attention: str = "flash"


CASES = {
    "small-b1": Case("gpt2", 1),
    "small-b4": Case("gpt2", 4),
    "small-b8": Case("gpt2", 8),  # config/finetune_small.py's micro-batch
    "small-b8-nodrop-accum1": Case("gpt2", 8, dropout=0.0, grad_accum=1),
    "small-b8-ckpt": Case("gpt2", 8, checkpointing=True),
    "small-b2-math": Case("gpt2", 2, attention="math"),
    "small-b4-t256": Case("gpt2", 4, seq_len=256),
    "medium-b1": Case("gpt2-medium", 1),
    "medium-b2": Case("gpt2-medium", 2),  # config/finetune_medium.py's micro-batch
    "medium-b4": Case("gpt2-medium", 4),
    "medium-b4-ckpt": Case("gpt2-medium", 4, checkpointing=True),
    "large-b2": Case("gpt2-large", 2),
}


class CheckpointedBlock(torch.nn.Module):
    """A block whose activations are recomputed in the backward pass (torch.utils.checkpoint)."""

    def __init__(self, block: torch.nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x, cache=None, layer=0):
        return torch.utils.checkpoint.checkpoint(self.block, x, cache, layer, use_reentrant=False)


def train_steps(model, optimizer, rt, batches, attention: str) -> None:
    """One optimizer step over the micro-batches, as nanogpt2/trainer.py's train_step does it."""
    k = len(batches)
    for x, y in batches:
        with sdpa_kernel([SDPBackend.MATH]) if attention == "math" else contextlib.nullcontext(), rt.autocast():
            loss = model(x, y)[1] / k  # as the trainer does: the logits are not kept alive
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(case: Case, rt, compile_model: bool, steps: int = 3) -> dict:
    config = GPTConfig.gpt2(case.model, dropout=case.dropout)  # fine-tuning shape: 50257 rows, no padding
    est = estimate_training_memory(config, case.batch_size, case.seq_len, dtype=str(rt.dtype).removeprefix("torch."),
                                   attention=case.attention, checkpointing=case.checkpointing,
                                   grad_accum=case.grad_accum)
    total = torch.cuda.get_device_properties(rt.device).total_memory
    row = {"estimate_gib": est.peak / GiB, "estimate_phase": est.peak_phase, "estimate_fits": est.fits(total)}
    model = optimizer = None
    try:
        torch.manual_seed(0)
        model = GPT(config).to(rt.device).train()
        if case.checkpointing:
            model.h = torch.nn.ModuleList(CheckpointedBlock(b) for b in model.h)
        optimizer = make_optimizer(model, 3e-5, 0.1, (0.9, 0.95), "cuda")
        runnable = torch.compile(model) if compile_model else model
        batches = [(torch.randint(0, config.vocab_size, (case.batch_size, case.seq_len), device=rt.device),
                    torch.randint(0, config.vocab_size, (case.batch_size, case.seq_len), device=rt.device))
                   for _ in range(case.grad_accum)]
        train_steps(runnable, optimizer, rt, batches, case.attention)  # allocates AdamW's moments
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(rt.device)
        for _ in range(steps - 1):
            train_steps(runnable, optimizer, rt, batches, case.attention)
        torch.cuda.synchronize()
        measured = torch.cuda.max_memory_allocated(rt.device)
        reserved = torch.cuda.max_memory_reserved(rt.device)
        row.update(measured_gib=measured / GiB, error=est.peak / measured - 1, reserved_over_allocated=reserved / measured - 1)
    except torch.cuda.OutOfMemoryError:
        row.update(measured_gib="OOM", error=None, reserved_over_allocated=None)
    finally:
        del model, optimizer
        gc.collect()
        torch.cuda.empty_cache()
    return row


def context_bytes(device) -> int:
    """Memory in use on the device outside PyTorch's allocator (the CUDA context, cuBLAS, ...)."""
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    return total - free - torch.cuda.memory_reserved(device)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 where supported), bfloat16, float16, float32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (the estimate is for eager)")
    parser.add_argument("--json", default=None, help="result file (default: bench/results/memory-<device>-<date>.json)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise UserError("bench/memory.py measures GPU memory and needs a CUDA GPU; none is visible here "
                        "(torch.cuda.is_available() is False). Run it on a machine with an NVIDIA GPU")
    names = args.cases.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise UserError(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")

    rt = resolve_runtime("cuda", args.dtype)
    enable_tf32()
    torch.ones(1, device=rt.device) @ torch.ones(1, 1, device=rt.device)  # create the context and a cuBLAS handle
    ctx = context_bytes(rt.device)
    print(f"{rt.describe()}: CUDA context outside the allocator {ctx / 2**20:,.0f} MiB "
          f"(allowance {CUDA_CONTEXT_BYTES / 2**20:,.0f} MiB); {'compiled' if args.compile else 'eager'}")

    rows = []
    for name in names:
        case = CASES[name]
        row = {"name": name, "model": case.model, "batch": case.batch_size, "seq_len": case.seq_len,
               "dropout": case.dropout, "accum": case.grad_accum, "ckpt": case.checkpointing,
               "attention": case.attention, **measure(case, rt, args.compile)}
        rows.append(row)
        got = "out of memory" if row["error"] is None else f"{row['measured_gib']:.2f} GiB ({row['error']:+.1%})"
        print(f"  {name}: estimate {row['estimate_gib']:.2f} GiB, measured {got}", flush=True)

    print_table(rows, ["name", "estimate_gib", "measured_gib", "error", "reserved_over_allocated", "estimate_phase",
                       "estimate_fits"])
    errors = [abs(r["error"]) for r in rows if r["error"] is not None]
    if errors:
        print(f"largest |error| {max(errors):.1%} (goal 15%); allocator slack up to "
              f"{max(r['reserved_over_allocated'] for r in rows if r['error'] is not None):.1%} "
              f"(allowance {ALLOCATOR_SLACK:.0%})")
    settings = {"cases": names, "dtype": str(rt.dtype).removeprefix("torch."), "compile": args.compile,
                "cuda_context_mib": ctx / 2**20, "torch": torch.__version__}
    path = write_result("memory", settings, rows, device=rt.device, path=args.json)
    print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
