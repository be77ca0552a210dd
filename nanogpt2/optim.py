"""AdamW with the usual split of parameters, and the learning-rate schedule.

Weight decay pulls weights toward zero, which regularises the matrices that
mix features: every Linear weight and the two embedding tables. It makes no
sense for biases and LayerNorm gains, whose natural values are 0 and 1, so
they get none (GPT-3 likewise applies weight decay of 0.1 to its weights;
Brown et al. 2020, App. B).

The schedule is linear warmup (Goyal et al. 2017: large steps on random
weights blow up Adam's early updates) followed by cosine decay to min_lr
(Loshchilov & Hutter 2017), or a constant rate after warmup.
"""

from __future__ import annotations

import inspect
import math

import torch

from nanogpt2.model import GPT


def param_groups(model: GPT, weight_decay: float) -> list[dict]:
    """Two groups: matrices and embeddings (dim >= 2) decay; biases and LayerNorm gains don't."""
    decay, no_decay = [], []
    for p in model.parameters():  # the tied embedding/head appears once
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: GPT, lr: float, weight_decay: float, betas: tuple[float, float], device_type: str):
    """AdamW, fused where PyTorch has a fused kernel: on CUDA it updates all parameters in a few
    launches instead of thousands; on the CPU it took 8 ms instead of 48 (foreach) for a 14M model."""
    fused = device_type in ("cuda", "cpu") and "fused" in inspect.signature(torch.optim.AdamW).parameters
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, fused=fused or None)


def lr_at(step: int, *, learning_rate: float, min_lr: float, warmup_iters: int, decay_iters: int, schedule: str) -> float:
    """The learning rate for optimizer step `step` (0-based)."""
    if step < warmup_iters:
        return learning_rate * (step + 1) / warmup_iters
    if schedule == "constant":
        return learning_rate
    if step >= decay_iters:
        return min_lr
    progress = (step - warmup_iters) / max(1, decay_iters - warmup_iters)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)
