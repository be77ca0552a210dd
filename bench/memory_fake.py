"""Tracing a GPU's training step on the CPU, on fake tensors, for bench/memory.py and tests/test_memory.py.

The step runs on FakeTensors (torch._subclasses.fake_tensor: tensors with shapes and dtypes but no
data, whose operators run their meta kernels) while torch.distributed._tools.mem_tracker.MemTracker
adds up the bytes of every storage alive after each operator: the bytes a GPU's allocator would hold.

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
larger than the tensor is handed out whole). On a GPU these make max_memory_allocated a few
percent larger than the traced peak (bench/README.md has the measured gaps).
Math attention with dropout is not traced: its dropout happens inside a C++ kernel
that would take the CPU's path. A fourth call differs too: 4. F.layer_norm is on CUDA
autocast's fp32 list and not on the CPU's, which matters once the residual stream is bf16
(param_dtype=bfloat16, or a LoRA base held in bf16): as_on_cuda casts its arguments to fp32.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from memory_step import Run, build, train_step
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker

from nanogpt2 import GPTConfig
from nanogpt2.errors import UserError

aten = torch.ops.aten


@contextlib.contextmanager
def as_on_cuda():
    """Run attention, dropout, cross-entropy and LayerNorm as PyTorch runs them on CUDA, whatever the tensors' device.

    For tracing a GPU's training step on fake CPU tensors (see the module docstring). It swaps the
    four functions in torch.nn.functional, which nanogpt2/model.py, nn.Dropout and nn.LayerNorm call, for the
    whole step, so that blocks recomputed in the backward pass take the same path. (A
    TorchFunctionMode would be neater, but a mode is switched off inside its own handler, and
    Tensor.backward goes through that handler.)"""
    originals = F.scaled_dot_product_attention, F.dropout, F.cross_entropy, F.layer_norm
    sdpa, _, cross_entropy_fp32, _ = originals

    def attention(*args, **kwargs):
        return sdpa(*args, **kwargs) if sdpa_math_only() else fused_attention(*args, **kwargs)

    def cross_entropy(*args, **kwargs):  # without autocast both devices run it in fp32
        return (autocast_cross_entropy if torch.is_autocast_enabled("cpu") else cross_entropy_fp32)(*args, **kwargs)

    F.scaled_dot_product_attention, F.dropout, F.cross_entropy = attention, cuda_dropout, cross_entropy
    F.layer_norm = cuda_layer_norm
    try:
        yield
    finally:
        F.scaled_dot_product_attention, F.dropout, F.cross_entropy, F.layer_norm = originals


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


def cuda_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """layer_norm under CUDA autocast, which runs it in fp32 (its fp32 list): a bf16 input, weight and bias are
    copied to fp32 first. CPU autocast leaves it in the input's dtype."""
    if torch.is_autocast_enabled("cpu"):
        x, weight, bias = (None if t is None else t.float() for t in (x, weight, bias))
    return _LAYER_NORM(x, normalized_shape, weight, bias, eps)


_LAYER_NORM = F.layer_norm


class LiveBytes(MemTracker):
    """MemTracker without its gradient hooks, which only label gradients (every storage made under the tracker
    is counted anyway) and cannot be put on frozen parameters (LoRA's base)."""

    def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
        return super()._track_module_params_and_buffers(module, install_grad_hooks=False)


def fake_peak(
    config: GPTConfig, batch_size: int, seq_len: int | None = None, *, dtype: str = "bfloat16", **options
) -> int:
    """Peak bytes of live tensors in a GPU's steady-state training step, traced on the CPU without allocating them.

    options: as for estimate_training_memory (attention, checkpointing, grad_accum, optimizer, ...)."""
    seq_len = config.block_size if seq_len is None else seq_len
    attention = options.get("attention", "flash")
    if attention == "math" and config.dropout > 0:
        raise UserError(
            "math attention with dropout cannot be traced without a GPU (its dropout runs inside a "
            "C++ kernel that takes the CPU's path); use dropout=0 or attention=flash"
        )
    low = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    autocast = (lambda: torch.autocast("cpu", dtype=low)) if low else contextlib.nullcontext
    with FakeTensorMode(), as_on_cuda():
        run = build(config, batch_size, seq_len, "cpu", fake=True, **options)
        train_step(run.model, run, run.batches, autocast, attention)  # allocates the optimizer's moments
        tracker = LiveBytes()
        tracker.track_external(run.model, *run.optimizers, run.batches)
        with tracker:  # MemTracker follows one forward per module: forget the last micro-step's before the next
            train_step(run.model, run, run.batches, autocast, attention, before_micro_step=tracker.reset_mod_stats)
        (peak,) = tracker.get_tracker_snapshot("peak").values()
    return peak["Total"]


def fake_sharded_peak(config: GPTConfig, batch_size: int, seq_len: int | None = None, *, shards: int, **options) -> int:
    """fake_peak for one of `shards` processes of an FSDP run (parallel=fsdp, nanogpt2/train/fsdp.py), traced in this
    process alone: a fake process group (torch.testing's FakeStore, whose collectives move no data) stands in for
    the others. Only in a process without a process group of its own; it is taken down again at the end.

    options: grad_accum, checkpointing, attention (FSDP trains fp32 AdamW on every weight, under bf16 autocast)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from nanogpt2 import GPT
    from nanogpt2.train.fsdp import shard
    from nanogpt2.train.optim import make_optimizer

    seq_len = config.block_size if seq_len is None else seq_len
    grad_accum, attention = options.get("grad_accum", 1), options.get("attention", "flash")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=shards)
    try:
        mesh = init_device_mesh("cpu", (shards,))  # outside FakeTensorMode: the mesh's ranks are real tensors
        autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
        with FakeTensorMode(), as_on_cuda():
            model = GPT(config).train()
            model.checkpointing = options.get("checkpointing", False)
            shard(model, torch.device("cpu"), mesh)
            optimizer = make_optimizer(model, 3e-5, 0.1, (0.9, 0.95), "cpu", "adamw")
            shape = (batch_size, seq_len)
            batches = [tuple(torch.randint(0, config.vocab_size, shape) for _ in "xy") for _ in range(grad_accum)]
            run = Run(model, [optimizer], optimizer.step, batches)
            train_step(model, run, batches, autocast, attention)  # allocates the optimizer's moments
            tracker = LiveBytes()
            tracker.track_external(model, optimizer, batches)
            with tracker:
                train_step(model, run, batches, autocast, attention, before_micro_step=tracker.reset_mod_stats)
            (peak,) = tracker.get_tracker_snapshot("peak").values()
    finally:
        dist.destroy_process_group()
    return peak["Total"]
