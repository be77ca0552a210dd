"""A training step as nanogpt2/train/trainer.py runs it, with every memory-saving option, for bench/memory.py.

build makes the model with the recipe's settings, through the training code's own switches: the
model's `checkpointing` and `loss_chunk_tokens` attributes, nanogpt2.lora.apply_lora, the whole model
cast to bf16 (param_dtype=bfloat16; under FakeTensorMode, Module.to cannot swap fake parameters, so
the fake model is built with bf16 as the default dtype instead: the same tensors), and
nanogpt2.train.optim's optimizers, OptimizerInBackward included (a post-accumulate-grad hook per parameter that
updates it with its own optimizer and frees its gradient, without gradient clipping).

One thing is not run on fake tensors: torchao's AdamW8bit.step, whose update is torch.compile'd, which
FakeTensorMode cannot run (DataDependentOutputException), and whose eager form would hold several fp32
temporaries of each tensor that the compiled kernel never makes. So there the step (traced_8bit_step)
creates the moments with the optimizer's own _new_buffer (8-bit codes, scales and code table, or fp32,
as the real step decides) and, for the update itself, allocates and frees what Inductor's kernel for it
allocates: two fp32 buffers of a quantized tensor's size (the new moments before they are re-quantized)
and two of its block scales; for an unquantized tensor nothing (one fused pointwise kernel). That is
read from the code Inductor generates for single_param_adam (TORCH_LOGS=output_code) and is the formula
nanogpt2.flops.memory_state.update_transient_bytes uses, so a trace checks everything about this
optimizer but that transient; on a GPU the real, compiled step runs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import unset_fake_temporarily
from torch.nn.attention import SDPBackend, sdpa_kernel

from nanogpt2 import GPT, GPTConfig
from nanogpt2.flops.memory_state import update_transient_bytes
from nanogpt2.lora import apply_lora
from nanogpt2.train.optim import OptimizerInBackward, make_optimizer, optimizer_factory


def train_step(model, run, batches, autocast, attention: str, before_micro_step=lambda: None) -> None:
    """One optimizer step over the micro-batches, as nanogpt2/train/trainer.py's train_step does it. run.step is None
    when the optimizer steps inside backward (then there is no gradient clipping either)."""
    k = len(batches)
    for x, y in batches:
        before_micro_step()
        # The attention backend holds through backward too, where checkpointed blocks are recomputed.
        with sdpa_kernel([SDPBackend.MATH]) if attention == "math" else contextlib.nullcontext():
            with autocast():
                loss = model(x, y)[1] / k  # as the trainer does: the logits are not kept alive
            loss.backward()
    if run.step is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        run.step()
        for optimizer in run.optimizers:
            optimizer.zero_grad(set_to_none=True)


@dataclass
class Run:
    """What build makes: the model (train mode), its optimizer(s), the step (None: fused into backward), batches."""

    model: torch.nn.Module
    optimizers: list
    step: object
    batches: list


def build(config: GPTConfig, batch_size: int, seq_len: int, device, *, fake: bool = False, **options) -> Run:
    """The model with the recipe's settings, its optimizer as the trainer makes it, and the step's micro-batches.

    options: as for estimate_training_memory. On fake tensors (fake=True) the 8-bit optimizer's step is
    traced_8bit_step (see the module docstring)."""
    o = {**RECIPE_DEFAULTS, **options}
    bf16_base = o["param_dtype"] == "bfloat16" or (o["lora_rank"] and o["lora_base_dtype"] == "bfloat16")
    previous = torch.get_default_dtype()
    if fake and bf16_base:  # Module.to cannot swap fake parameters: build them in bf16 (module docstring)
        torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = GPT(config).train()
    finally:
        torch.set_default_dtype(previous)
    if o["param_dtype"] == "bfloat16" and not fake:
        model.to(torch.bfloat16)
    model.checkpointing = o["checkpointing"]
    model.loss_chunk_tokens = o["loss_chunk_tokens"]
    if o["lora_rank"]:
        base_dtype = torch.bfloat16 if bf16_base and not fake else None  # fake: built in bf16 already
        apply_lora(model, o["lora_rank"], 2 * o["lora_rank"], 0.0, o["lora_targets"], base_dtype)
    kind, dev = o["optimizer"], torch.device(device).type
    batches = [
        tuple(torch.randint(0, config.vocab_size, (batch_size, seq_len), device=device) for _ in "xy")
        for _ in range(o["grad_accum"])
    ]
    traced = fake and kind == "adamw8bit"  # torchao's compiled step cannot run on fake tensors
    if not o["optimizer_in_backward"]:
        optimizer = make_optimizer(model, 3e-5, 0.1, (0.9, 0.95), dev, kind)
        return Run(model, [optimizer], (lambda: traced_8bit_step(optimizer)) if traced else optimizer.step, batches)
    # The trainer's own OptimizerInBackward: one optimizer per parameter, stepped by a hook during backward.
    make = optimizer_factory(model, 3e-5, (0.9, 0.95), dev, kind)
    fused = OptimizerInBackward(model, make, 0.1, **({"update": traced_8bit_step} if traced else {}))
    return Run(model, fused.optimizers, None, batches)


RECIPE_DEFAULTS = dict(
    attention="flash",
    checkpointing=False,
    grad_accum=1,
    optimizer="adamw",
    param_dtype="float32",
    loss_chunk_tokens=0,
    optimizer_in_backward=False,
    lora_rank=0,
    lora_targets="attn",
    lora_base_dtype="float32",
)


@torch.no_grad()
def traced_8bit_step(optimizer) -> None:
    """torchao AdamW8bit.step's memory on fake tensors: its moments, made by its own _new_buffer, and the
    compiled update's buffers, allocated and freed (see the module docstring); no arithmetic."""
    from torchao.optim.subclass_8bit import get_qmap_signed, get_qmap_unsigned

    with unset_fake_temporarily():  # torchao computes its code tables once (cached), from values fakes lack
        get_qmap_signed(), get_qmap_unsigned()
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            state = optimizer.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = optimizer._new_buffer(p, True)
                state["exp_avg_sq"] = optimizer._new_buffer(p, False)
            quantized = hasattr(state["exp_avg"], "codes")  # torchao's OptimState8bit
            transient = torch.empty(update_transient_bytes(p.numel(), quantized), dtype=torch.uint8)
            del transient
