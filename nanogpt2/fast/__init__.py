"""Faster paths for the CPU, put into a built GPT: the same numbers (or the same distribution) in less time.

model.py is GPT-2 as a reader should meet it, in plain torch.nn modules. Each path here does one
of its steps another way, and is put in by changing a module's class, as lora.py adapts a Linear:
the modules keep their weights, and the state dict its keys and tensors.

    path                        what it changes                                     taken for
    fused_loss.FusedLossGPT     the LM head + cross-entropy in one (N, V) buffer    CPU training, eager fp32
    dropout.MaskBitsDropout     dropout masks from 31 random bits (same Bernoulli)  CPU training with dropout
    dropout.DropoutAttention    attention written out, so its dropout is that too   CPU training with dropout
    linear.FewRowsLinear        the LM head's x W^T as (W x^T)^T for 2..16 rows     CPU generation
    screened_head.ScreenedHead  the top-k tokens from a bf16 screen, proven exact   CPU generation, native bf16

train/setup.py, the sampling and evaluation commands and the benchmarks opt in through the functions
below, where the records in bench/results/ (bench/README.md) measured a path faster. GPUs keep the
plain model: torch.compile and PyTorch's fused kernels are the fast path there, and the memory
model (nanogpt2/flops/memory.py) describes it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from nanogpt2.fast.dropout import DropoutAttention, MaskBitsDropout
from nanogpt2.fast.fused_loss import FusedLossGPT
from nanogpt2.fast.linear import FewRowsLinear
from nanogpt2.fast.screened_head import ScreenedHead, screened_head_for
from nanogpt2.model import GPT, CausalSelfAttention

__all__ = [
    "DropoutAttention",
    "FewRowsLinear",
    "FusedLossGPT",
    "MaskBitsDropout",
    "ScreenedHead",
    "for_cpu_generation",
    "for_cpu_training",
    "generation_paths_pay",
    "screened_head_for",
    "training_paths_pay",
]


def training_paths_pay(device_type: str, compute_dtype: torch.dtype, weight_dtype: torch.dtype, compiled: bool) -> bool:
    """Whether for_cpu_training applies: the CPU, fp32 throughout, uncompiled (compile fuses the plain ops)."""
    return device_type == "cpu" and compute_dtype == weight_dtype == torch.float32 and not compiled


def for_cpu_training(model: GPT, *, fused_loss: bool = True, dropout: bool = True) -> GPT:
    """`model`, in place, with the CPU training paths: the fused LM head + loss, and cheaper dropout masks
    (also in attention). The loss and gradients are the plain model's to fp32 rounding; the dropout masks
    are other draws from the same distribution."""
    if fused_loss:
        FusedLossGPT.adapt(model)
    if dropout:
        for module in model.modules():
            if type(module) is nn.Dropout:
                module.__class__ = MaskBitsDropout
            elif type(module) is CausalSelfAttention:
                DropoutAttention.adapt(module)
    return model


def generation_paths_pay(device_type: str) -> bool:
    """Whether for_cpu_generation applies: on the CPU."""
    return device_type == "cpu"


def for_cpu_generation(model: GPT) -> GPT:
    """`model`, in place, with its LM head multiplying few rows in MKL's faster order (FewRowsLinear): for the
    head's (V, C) weight, V >> C, the order pays at every batch size of 2 to 16; for the blocks' it does not
    (bench/README.md). The screened head needs no call: generation takes it where it pays (screened_head_for)."""
    if type(model.lm_head) is nn.Linear:
        model.lm_head.__class__ = FewRowsLinear
    return model
