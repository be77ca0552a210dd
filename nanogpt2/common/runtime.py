"""Where and in what precision to run: device, dtype, autocast, compile, seeds.

train.py, sample.py and the benchmarks all start the same way, so the choices
live here once:

* device "auto": CUDA if present, else Apple's MPS, else the CPU.
* dtype "auto": bfloat16 on GPUs that have it (Ampere and newer), float16 on
  older CUDA GPUs (with a GradScaler in training, since fp16 gradients
  underflow), float32 on the CPU and MPS.
* Mixed precision by autocast (Micikevicius et al. 2018): weights stay fp32,
  matmuls run in 16 bits, reductions like softmax and the loss in fp32.
* TF32 for the fp32 matmuls that remain (10-bit mantissa on tensor cores).
* torch.compile on by default on CUDA when Triton is importable.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import random
import sys
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from nanogpt2.errors import UserError

M = TypeVar("M", bound=torch.nn.Module)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype  # the autocast dtype; parameters stay float32

    @property
    def device_type(self) -> str:
        return self.device.type

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range."""
        return self.dtype == torch.float16

    def autocast(self):
        """The mixed-precision context for forward passes (a no-op in float32)."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def inference_model(self, model: M) -> M:
        """`model` on this device, in eval mode. Weights held in bf16 (a param_dtype=bfloat16 run) are widened
        when this runtime computes in float32 (no autocast), so that a model is run in the precision asked for."""
        if self.dtype == torch.float32:
            model = model.float()
        return model.to(self.device).eval()

    def synchronize(self) -> None:
        """Wait for queued GPU work (for honest timings)."""
        if self.device_type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device_type == "mps":
            torch.mps.synchronize()

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device_type == "cuda" else self.device_type
        return f"{name} ({self.device}), {str(self.dtype).removeprefix('torch.')}"


def resolve_runtime(device: str = "auto", dtype: str = "auto") -> Runtime:
    """Turn "auto"/explicit device and dtype settings into a checked Runtime."""
    dev = pick_device(device)
    return Runtime(dev, pick_dtype(dtype, dev))


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name!r} but CUDA is not available here; use device=auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"device={name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device='mps' but MPS is not available here; use device=auto or cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device={name!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return dev


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise UserError(f"dtype={name!r} is not one of auto, {', '.join(DTYPES)}")
    dtype = DTYPES[name]
    if device.type == "cpu" and dtype == torch.float16:
        raise UserError("dtype=float16 is not supported on the CPU; use bfloat16 or float32")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise UserError("this GPU has no bfloat16 support; use dtype=float16 (or auto)")
    return dtype


def want_compile(setting: bool | None, device: torch.device) -> bool:
    """compile=None means: on for CUDA when Triton (compile's GPU code generator) is installed."""
    if setting is None:
        return device.type == "cuda" and importlib.util.find_spec("triton") is not None
    return setting


def enable_tf32() -> None:
    """Let float32 matmuls and convolutions use TF32 tensor cores (Ampere and newer)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def use_expandable_segments() -> str | None:
    """Ask PyTorch's CUDA allocator for expandable segments, unless the user chose its settings.

    Training allocates tensors of many sizes (activations, logits, optimizer
    states); with fixed-size segments the freed gaps between them fragment the
    memory, and a 12 GB card can run out with GBs "reserved but unallocated".
    Expandable segments grow one mapping instead (PyTorch's CUDA memory notes,
    "Optimizing memory usage with PYTORCH_CUDA_ALLOC_CONF"). It must be set before
    the allocator's first use. Returns what the run uses, for its header."""
    import os

    if not torch.cuda.is_available():
        return None
    own = os.environ.get("PYTORCH_CUDA_ALLOC_CONF") or os.environ.get("PYTORCH_ALLOC_CONF")
    if own:
        return f"{own} (your PYTORCH_CUDA_ALLOC_CONF)"
    if torch.cuda.is_initialized():  # too late: the allocator has read its settings already
        return "PyTorch's default (CUDA was in use before training started)"
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    return "expandable_segments:True (set PYTORCH_CUDA_ALLOC_CONF to choose otherwise)"


def keep_freed_cpu_memory() -> bool:
    """On Linux, stop glibc from handing big freed blocks back to the kernel (True if applied).

    A training step on the CPU allocates and frees the same few hundred-MB tensors
    (logits, their gradient) every step. glibc serves blocks above its mmap
    threshold with fresh mappings and unmaps them on free, so every step re-faults
    hundreds of MB of zeroed pages, and a small model's step spends much of its time
    in the kernel (bench/README.md has the record). Raising the mmap and trim thresholds
    keeps freed memory in the heap for reuse (the same reason Intel's PyTorch CPU
    tuning guide recommends jemalloc or tcmalloc). The cost: the process keeps its
    peak memory until it exits.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from <malloc.h>
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
