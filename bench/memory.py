"""Memory of fine-tuning steps: the measured peak against nanogpt2.flops.memory's estimate, with or without a GPU.

    python bench/memory.py                       # every case below: on cuda:0 if there is one, else traced
    python bench/memory.py --fake                # trace even where there is a GPU
    python bench/memory.py --cases=small-b8,medium-b2 --compile

For each case it builds the GPT-2 shape with random weights (memory does not depend
on the values), then runs training steps exactly as nanogpt2/trainer.py does: for
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
* fake: no GPU and no memory. The step runs on FakeTensors (torch._subclasses.fake_tensor:
  tensors with shapes and dtypes but no data, whose operators run their meta kernels)
  while torch.distributed._tools.mem_tracker.MemTracker adds up the bytes of every
  storage alive after each operator: the bytes a GPU's allocator would hold. All the
  cases take about 15 minutes on two CPU cores, gpt2-small's each under half a minute.

Making the fake step the GPU's step. FakeTensorMode makes tensors with device="cuda"
even in a CPU-only build of PyTorch, but autograd cannot record a backward node for
one (it asks the CUDA device guard for the current stream, and the process aborts).
So the step runs on fake CPU tensors under CPU autocast, and as_on_cuda() sends the
three calls whose implementation PyTorch picks by device to the one CUDA picks:

1. F.scaled_dot_product_attention: on a GPU, FlashAttention (Dao et al. 2022) for
   16-bit inputs and the memory-efficient kernel for fp32; the CPU would pick its own.
2. F.dropout: CUDA uses the fused native_dropout, which keeps a 1-byte mask; the CPU
   multiplies by a noise tensor of the input's dtype (4 bytes for the fp32 residual).
3. F.cross_entropy: CPU autocast runs all of it in fp32 (cross_entropy_loss is on its
   fp32 list). CUDA autocast has no rule for it: log_softmax runs in the logits' dtype
   (cross_entropy passes that dtype explicitly, and CUDA's fp32_set_opt_dtype rule keeps
   an explicit dtype), then nll_loss, which is on CUDA's fp32 list, takes an fp32 copy of
   the log-probabilities and keeps it for its backward pass (aten/src/ATen/autocast_mode.h
   and native/LossNLL.cpp in PyTorch's source).

Everything else (matmuls cast to bf16 with autocast's weight cache, LayerNorm and the
residual stream in fp32, AdamW's state) is the same on both devices. What tracing cannot
see is memory that is not a tensor's: the kernels' workspaces (cuBLAS's, FlashAttention's
backward accumulators) and the caching allocator's rounding (a cached block up to 1 MiB
larger than the tensor is handed out whole). On an H100 these made max_memory_allocated
0.07-0.10 GiB larger than the traced peak for gpt2 and gpt2-medium, 0.31 GiB for gpt2-large.
Math attention with dropout is not traced: its dropout happens inside a C++ kernel
that would take the CPU's path.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker
from torch.nn.attention import SDPBackend, sdpa_kernel

from nanogpt2 import GPT, GPTConfig
from nanogpt2.errors import UserError, run_main
from nanogpt2.flops.memory import ALLOCATOR_SLACK, CUDA_CONTEXT_BYTES, estimate_training_memory
from nanogpt2.optim import make_optimizer
from nanogpt2.runtime import enable_tf32, resolve_runtime

from common import print_table, write_result

GiB = 2**30
aten = torch.ops.aten


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
}


class CheckpointedBlock(torch.nn.Module):
    """A block whose activations are recomputed in the backward pass (torch.utils.checkpoint)."""

    def __init__(self, block: torch.nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x, cache=None, layer=0):
        return torch.utils.checkpoint.checkpoint(self.block, x, cache, layer, use_reentrant=False)


@contextlib.contextmanager
def as_on_cuda():
    """Run attention, dropout and cross-entropy as PyTorch runs them on CUDA, whatever the tensors' device.

    For tracing a GPU's training step on fake CPU tensors (see the module docstring). It swaps the
    three functions in torch.nn.functional, which nanogpt2/model.py and nn.Dropout call, for the
    whole step, so that blocks recomputed in the backward pass take the same path. (A
    TorchFunctionMode would be neater, but a mode is switched off inside its own handler, and
    Tensor.backward goes through that handler.)"""
    originals = F.scaled_dot_product_attention, F.dropout, F.cross_entropy
    sdpa, _, cross_entropy_fp32 = originals

    def attention(*args, **kwargs):
        return sdpa(*args, **kwargs) if sdpa_math_only() else fused_attention(*args, **kwargs)

    def cross_entropy(*args, **kwargs):  # without autocast both devices run it in fp32
        return (autocast_cross_entropy if torch.is_autocast_enabled("cpu") else cross_entropy_fp32)(*args, **kwargs)

    F.scaled_dot_product_attention, F.dropout, F.cross_entropy = attention, cuda_dropout, cross_entropy
    try:
        yield
    finally:
        F.scaled_dot_product_attention, F.dropout, F.cross_entropy = originals


def sdpa_math_only() -> bool:
    return not (torch.backends.cuda.flash_sdp_enabled() or torch.backends.cuda.mem_efficient_sdp_enabled())


def fused_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """The kernel F.scaled_dot_product_attention runs on CUDA: FlashAttention for fp16/bf16, else memory-efficient."""
    if attn_mask is not None or enable_gqa:
        raise NotImplementedError("as_on_cuda covers the training path only: causal, no mask, no GQA")
    if q.dtype in (torch.float16, torch.bfloat16):
        return aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, scale=scale)[0]
    return aten._scaled_dot_product_efficient_attention(q, k, v, None, True, dropout_p, is_causal, scale=scale)[0]


def cuda_dropout(x, p=0.5, training=True, inplace=False):
    """at::dropout on CUDA: the fused kernel, which keeps a bool mask, whenever it drops anything."""
    if inplace:
        raise NotImplementedError("as_on_cuda covers out-of-place dropout only")
    if training and 0 < p < 1 and x.numel() > 0:
        return aten.native_dropout(x, p, True)[0]
    return x


def autocast_cross_entropy(
    logits,
    targets,
    weight=None,
    size_average=None,
    ignore_index=-100,
    reduce=None,
    reduction="mean",
    label_smoothing=0.0,
):
    """cross_entropy under CUDA autocast: log_softmax in the logits' dtype, then nll_loss on an fp32 copy."""
    if weight is not None or size_average is not None or reduce is not None or label_smoothing:
        raise NotImplementedError("as_on_cuda covers plain cross-entropy over class indices only")
    log_probs = torch.log_softmax(logits, 1, dtype=logits.dtype)
    return F.nll_loss(log_probs.float(), targets, ignore_index=ignore_index, reduction=reduction)


def train_step(model, optimizer, batches, autocast, attention: str, before_micro_step=lambda: None) -> None:
    """One optimizer step over the micro-batches, as nanogpt2/trainer.py's train_step does it."""
    k = len(batches)
    for x, y in batches:
        before_micro_step()
        # The attention backend holds through backward too, where checkpointed blocks are recomputed.
        with sdpa_kernel([SDPBackend.MATH]) if attention == "math" else contextlib.nullcontext():
            with autocast():
                loss = model(x, y)[1] / k  # as the trainer does: the logits are not kept alive
            loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def build(config: GPTConfig, batch_size: int, seq_len: int, grad_accum: int, checkpointing: bool, device):
    """The model (train mode), fused AdamW as the trainer makes it, and the step's micro-batches."""
    with torch.device(device):
        model = GPT(config).train()
    if checkpointing:
        model.h = torch.nn.ModuleList(CheckpointedBlock(b) for b in model.h)
    optimizer = make_optimizer(model, 3e-5, 0.1, (0.9, 0.95), torch.device(device).type)
    batches = [
        tuple(torch.randint(0, config.vocab_size, (batch_size, seq_len), device=device) for _ in "xy")
        for _ in range(grad_accum)
    ]
    return model, optimizer, batches


def fake_peak(
    config: GPTConfig,
    batch_size: int,
    seq_len: int | None = None,
    *,
    dtype: str = "bfloat16",
    attention: str = "flash",
    checkpointing: bool = False,
    grad_accum: int = 1,
) -> int:
    """Peak bytes of live tensors in a GPU's steady-state training step, traced on the CPU without allocating them."""
    seq_len = config.block_size if seq_len is None else seq_len
    if attention == "math" and config.dropout > 0:
        raise UserError(
            "math attention with dropout cannot be traced without a GPU (its dropout runs inside a "
            "C++ kernel that takes the CPU's path); use dropout=0 or attention=flash"
        )
    low = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    autocast = (lambda: torch.autocast("cpu", dtype=low)) if low else contextlib.nullcontext
    with FakeTensorMode(), as_on_cuda():
        model, optimizer, batches = build(config, batch_size, seq_len, grad_accum, checkpointing, "cpu")
        train_step(model, optimizer, batches, autocast, attention)  # allocates AdamW's moments
        tracker = MemTracker()
        tracker.track_external(model, optimizer, batches)
        with tracker:  # MemTracker follows one forward per module: forget the last micro-step's before the next
            train_step(model, optimizer, batches, autocast, attention, before_micro_step=tracker.reset_mod_stats)
        (peak,) = tracker.get_tracker_snapshot("peak").values()
    return peak["Total"]


def measure(case: Case, rt, fake: bool, compile_model: bool, steps: int = 3) -> dict:
    config = GPTConfig.gpt2(case.model, dropout=case.dropout)  # fine-tuning shape: 50257 rows, no padding
    dtype = str(rt.dtype).removeprefix("torch.") if rt else "bfloat16"
    options = dict(dtype=dtype, attention=case.attention, checkpointing=case.checkpointing, grad_accum=case.grad_accum)
    est = estimate_training_memory(config, case.batch_size, case.seq_len, **options)
    row = {"estimate_gib": est.peak / GiB, "estimate_phase": est.peak_phase}
    if fake:
        try:
            measured = fake_peak(config, case.batch_size, case.seq_len, **options)
        except UserError as e:
            return {**row, "measured_gib": "not traced", "error": None, "note": str(e)}
        return {**row, "measured_gib": measured / GiB, "error": est.peak / measured - 1}
    total = torch.cuda.get_device_properties(rt.device).total_memory
    row["estimate_fits"] = est.fits(total)
    model = optimizer = None
    try:
        torch.manual_seed(0)
        model, optimizer, batches = build(
            config, case.batch_size, case.seq_len, case.grad_accum, case.checkpointing, rt.device
        )
        runnable = torch.compile(model) if compile_model else model
        train_step(runnable, optimizer, batches, rt.autocast, case.attention)  # allocates AdamW's moments
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(rt.device)
        for _ in range(steps - 1):
            train_step(runnable, optimizer, batches, rt.autocast, case.attention)
        torch.cuda.synchronize()
        measured = torch.cuda.max_memory_allocated(rt.device)
        reserved = torch.cuda.max_memory_reserved(rt.device)
        row.update(
            measured_gib=measured / GiB, error=est.peak / measured - 1, reserved_over_allocated=reserved / measured - 1
        )
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
