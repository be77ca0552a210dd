"""Memory of fine-tuning steps: the measured peak against nanogpt2.flops.memory's estimate, with or without a GPU.

    python bench/memory.py                       # every case below: on cuda:0 if there is one, else traced
    python bench/memory.py --fake                # trace even where there is a GPU
    python bench/memory.py --cases=small-b8,medium-b2 --compile

For each case it builds the GPT-2 shape with random weights (memory does not depend
on the values), then runs training steps exactly as nanogpt2/train/trainer.py does: for
each micro-batch, forward under autocast keeping only the loss, loss /
accumulation, backward; then gradient clipping, fused AdamW, zero_grad(set_to_none).
The first step allocates AdamW's moments; the peak is measured over a later step
(the steady state the estimate describes) and compared with
estimate_training_memory(...).peak. The goal is agreement within +-5%.

Two ways to measure the peak:

* cuda: torch.cuda.max_memory_allocated on a GPU. A case the estimate says does not
  fit is still run: an out-of-memory error is recorded as such. The run also records
  the memory the CUDA context takes outside PyTorch's allocator (compare
  memory.CUDA_CONTEXT_BYTES) and the allocator's reserved peak (compare memory.ALLOCATOR_SLACK).
* fake: no GPU and no memory: the step is traced on fake tensors, as CUDA runs it
  (bench/memory_fake.py says how). gpt2-small's cases take under half a minute each on two
  CPU cores, gpt2-xl's about a minute.

The step, and every memory-saving option of training it can use (checkpointing, chunked
loss, LoRA, bf16 weights, 8-bit AdamW, the step fused into backward), is bench/memory_step.py.

What tracing cannot see is memory that is not a tensor's: the kernels' workspaces (cuBLAS's,
FlashAttention's backward accumulators) and the caching allocator's rounding (a cached block up
to 1 MiB larger than the tensor is handed out whole). On a GPU these make max_memory_allocated
a few percent larger than the traced peak (bench/README.md has the measured gaps).
"""

from __future__ import annotations

import argparse
import gc
from dataclasses import dataclass

import torch
from memory_fake import as_on_cuda, fake_peak, fake_sharded_peak  # noqa: F401  (as_on_cuda: for tests/test_memory.py)
from memory_step import RECIPE_DEFAULTS, build, train_step

from nanogpt2 import GPTConfig
from nanogpt2.common.runtime import enable_tf32, resolve_runtime
from nanogpt2.errors import UserError, run_main
from nanogpt2.flops.memory import ALLOCATOR_SLACK, CUDA_CONTEXT_BYTES, estimate_training_memory

from common import print_table, write_result

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
    scratch: bool = False  # from scratch: the vocabulary padded to 50304 (fine-tuning keeps OpenAI's 50257)
    optimizer: str = "adamw"
    param_dtype: str = "float32"
    loss_chunk_tokens: int = 0
    optimizer_in_backward: bool = False
    lora_rank: int = 0
    lora_targets: str = "attn"
    lora_base_dtype: str = "float32"
    shards: int = 1  # >1: one of that many processes of a parallel=fsdp run (fp32 AdamW on every weight)

    def config(self) -> GPTConfig:
        return GPTConfig.gpt2(self.model, dropout=self.dropout, pad_vocab_multiple=64 if self.scratch else 1)

    def options(self) -> dict:
        """The keywords of estimate_training_memory and fake_peak (all but dtype, which the run decides)."""
        names = ("attention", "checkpointing", "grad_accum", "optimizer", "param_dtype", "loss_chunk_tokens")
        names += ("optimizer_in_backward", "lora_rank", "lora_targets", "lora_base_dtype")
        if self.shards > 1:  # what fake_sharded_peak takes: FSDP refuses the others (TrainConfig._check_parallel)
            names = ("attention", "checkpointing", "grad_accum")
        return {name: getattr(self, name) for name in names}


# The memory-saving recipes for a 12 GB card (nanogpt2.flops --fit lists them), at full size.
# config/finetune_xl_full.py and config/train_gpt2_xl.py. (At micro-batch 1 chunking the loss saves nothing: the
# first GPU record took "xl-full" and "xl-scratch" with chunks of 1024, now the *-chunk1024 cases.)
XL_FULL = dict(param_dtype="bfloat16", optimizer="adamw8bit", checkpointing=True)

CASES = {
    "small-b1": Case("gpt2", 1),
    "small-b4": Case("gpt2", 4),  # config/finetune_small.py's micro-batch
    "small-b8": Case("gpt2", 8),
    "small-b8-nodrop-accum1": Case("gpt2", 8, dropout=0.0, grad_accum=1),
    "small-b8-ckpt": Case("gpt2", 8, checkpointing=True),
    "small-b8-ckpt-accum1": Case("gpt2", 8, checkpointing=True, grad_accum=1),
    "small-b2-math": Case("gpt2", 2, attention="math"),
    "small-b2-math-nodrop": Case("gpt2", 2, dropout=0.0, attention="math"),
    "small-b4-t256": Case("gpt2", 4, seq_len=256),
    "medium-b1": Case("gpt2-medium", 1),
    "medium-b2": Case("gpt2-medium", 2),  # config/finetune_medium.py's micro-batch
    "medium-b4": Case("gpt2-medium", 4),
    "medium-b4-ckpt": Case("gpt2-medium", 4, checkpointing=True),
    "large-b2": Case("gpt2-large", 2),
    "xl-b2": Case("gpt2-xl", 2),  # fits an 80 GB card (weights, gradients and AdamW alone are 23 GiB)
    # config/finetune_large.py (accumulation 16 there; from 2 on, the gradients are held the same way)
    "large-recipe": Case("gpt2-large", 2, checkpointing=True, optimizer="adamw8bit"),
    # config/finetune_large.py since bf16 weights: --fit's cheapest full-weight recipe for gpt2-large on a 4070 Ti
    "large-bf16": Case("gpt2-large", 2, optimizer="adamw8bit", param_dtype="bfloat16"),
    # config/finetune_xl_lora.py: the cheapest recipe --fit finds for gpt2-xl on a 4070 Ti
    "xl-lora-b2": Case("gpt2-xl", 2, lora_rank=16, lora_base_dtype="bfloat16"),
    # the largest micro-batch --fit finds for LoRA with checkpointing on a 4070 Ti
    "xl-lora": Case("gpt2-xl", 11, checkpointing=True, lora_rank=16, lora_base_dtype="bfloat16"),
    "xl-full": Case("gpt2-xl", 1, **XL_FULL),
    "xl-full-chunk1024": Case("gpt2-xl", 1, loss_chunk_tokens=1024, **XL_FULL),
    "xl-full-fused": Case("gpt2-xl", 1, grad_accum=1, optimizer_in_backward=True, loss_chunk_tokens=1024, **XL_FULL),
    "xl-scratch": Case("gpt2-xl", 1, dropout=0.0, scratch=True, **XL_FULL),
    "xl-scratch-chunk1024": Case("gpt2-xl", 1, dropout=0.0, scratch=True, loss_chunk_tokens=1024, **XL_FULL),
    # parallel=fsdp, traced as one of N processes (fake only): docs/distributed.md's table and --fit's FSDP recipes
    "large-fsdp2-b1": Case("gpt2-large", 1, shards=2),
    "large-fsdp4-b2": Case("gpt2-large", 2, shards=4),
    "xl-fsdp2-b1": Case("gpt2-xl", 1, shards=2),  # does not fit 12 GB: weights, gradients and moments are 11.6 GiB
    "xl-fsdp4-b1": Case("gpt2-xl", 1, shards=4),
    "xl-fsdp4-ckpt": Case("gpt2-xl", 1, checkpointing=True, shards=4),  # --fit's cheapest gpt2-xl recipe on 4 cards
}


def measure(case: Case, rt, fake: bool, compile_model: bool, steps: int = 3) -> dict:
    config = case.config()
    dtype = str(rt.dtype).removeprefix("torch.") if rt else "bfloat16"
    options = case.options()
    est = estimate_training_memory(config, case.batch_size, case.seq_len, dtype=dtype, shards=case.shards, **options)
    row = {"estimate_gib": est.peak / GiB, "estimate_phase": est.peak_phase}
    if case.shards > 1 and not fake:
        return {**row, "measured_gib": "not measured", "error": None, "note": "one process of N: use --fake"}
    if fake:
        try:
            if case.shards > 1:
                measured = fake_sharded_peak(config, case.batch_size, case.seq_len, shards=case.shards, **options)
            else:
                measured = fake_peak(config, case.batch_size, case.seq_len, dtype=dtype, **options)
        except UserError as e:
            return {**row, "measured_gib": "not traced", "error": None, "note": str(e)}
        return {**row, "measured_gib": measured / GiB, "error": est.peak / measured - 1}
    total = torch.cuda.get_device_properties(rt.device).total_memory
    row["estimate_fits"] = est.fits(total)
    run = None
    try:
        torch.manual_seed(0)
        run = build(config, case.batch_size, case.seq_len, rt.device, **options)
        runnable = torch.compile(run.model) if compile_model else run.model
        train_step(runnable, run, run.batches, rt.autocast, case.attention)  # allocates the optimizer's moments
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(rt.device)
        for _ in range(steps - 1):
            train_step(runnable, run, run.batches, rt.autocast, case.attention)
        torch.cuda.synchronize()
        measured = torch.cuda.max_memory_allocated(rt.device)
        reserved = torch.cuda.max_memory_reserved(rt.device)
        row.update(
            measured_gib=measured / GiB, error=est.peak / measured - 1, reserved_over_allocated=reserved / measured - 1
        )
    except torch.cuda.OutOfMemoryError:
        row.update(measured_gib="OOM", error=None, reserved_over_allocated=None)
    finally:
        del run
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
    parser.add_argument("--fake", action="store_true", help="trace the step on the CPU even if there is a GPU")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the model (GPU only; the estimate is for eager PyTorch)"
    )
    parser.add_argument("--json", default=None, help="result file (default: bench/results/memory-<device>-<date>.json)")
    args = parser.parse_args(argv)
    names = args.cases.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise UserError(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    fake = args.fake or not torch.cuda.is_available()
    if fake and args.compile:
        raise UserError("--compile needs a GPU: the traced (fake) step is eager PyTorch")

    settings = {
        "cases": names,
        "method": "fake" if fake else "cuda",
        "compile": args.compile,
        "torch": torch.__version__,
    }
    if fake:
        rt, device = None, "cpu"
        dtype = "bfloat16" if args.dtype == "auto" else args.dtype
        if dtype != "bfloat16":
            raise UserError("the traced step emulates bfloat16 autocast on CUDA; --dtype must be auto or bfloat16")
        print("no GPU used: tracing each step on fake tensors (FakeTensorMode + MemTracker), as CUDA would run it")
    else:
        rt = resolve_runtime("cuda", args.dtype)
        device, dtype = rt.device, str(rt.dtype).removeprefix("torch.")
        enable_tf32()
        torch.ones(1, device=rt.device) @ torch.ones(1, 1, device=rt.device)  # create the context and a cuBLAS handle
        ctx = context_bytes(rt.device)
        settings["cuda_context_mib"] = ctx / 2**20
        print(
            f"{rt.describe()}: CUDA context outside the allocator {ctx / 2**20:,.0f} MiB "
            f"(allowance {CUDA_CONTEXT_BYTES / 2**20:,.0f} MiB); {'compiled' if args.compile else 'eager'}"
        )
    settings["dtype"] = dtype

    rows = []
    for name in names:
        case = CASES[name]
        row = {
            "name": name,
            "model": case.model,
            "batch": case.batch_size,
            "seq_len": case.seq_len,
            "dropout": case.dropout,
            "accum": case.grad_accum,
            "ckpt": case.checkpointing,
            "attention": case.attention,
            **{
                k: v
                for k, v in case.options().items()
                if v != RECIPE_DEFAULTS.get(k) and k not in ("checkpointing", "grad_accum")
            },
            **measure(case, rt, fake, args.compile),
        }
        rows.append(row)
        got = (
            f"{row['measured_gib']:.3f} GiB ({row['error']:+.1%})" if row["error"] is not None else row["measured_gib"]
        )
        print(f"  {name}: estimate {row['estimate_gib']:.3f} GiB, measured {got}", flush=True)

    columns = ["name", "estimate_gib", "measured_gib", "error", "estimate_phase"]
    print_table(rows, columns if fake else [*columns[:4], "reserved_over_allocated", *columns[4:], "estimate_fits"])
    measured = [r for r in rows if r["error"] is not None]
    if measured:
        print(
            f"largest |error| {max(abs(r['error']) for r in measured):.1%} (goal 5%)"
            + (
                ""
                if fake
                else f"; allocator slack up to {max(r['reserved_over_allocated'] for r in measured):.1%} "
                f"(allowance {ALLOCATOR_SLACK:.0%})"
            )
        )
    path = write_result("memory", settings, rows, device=device, path=args.json)
    print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
