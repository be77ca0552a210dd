"""The compute calculator: FLOPs, MFU, training memory, GPU peaks and scaling laws.

    python -m nanogpt2.flops --model=gpt2-medium --finetune --gpu=4070ti

Read in this order:
    counting.py   parameters and FLOPs per token, exactly (checked against FlopCounterMode), and MFU
    hardware.py   GPUs: dense peak FLOP/s by dtype, memory, and detection from the CUDA device name
    memory.py     the bytes one training step holds at its peak (checked against autograd and a GPU),
                  from memory_state.py (weights, gradients, optimizer moments), memory_activations.py
                  (what autograd saves) and memory_phases.py (the step's moments, one function each)
    fit.py        which recipes (micro-batch, checkpointing, optimizer, bf16 weights, LoRA) fit a GPU
    scaling.py    compute-optimal model size and tokens (Chinchilla and its refits)
    cli.py        the command line that puts them together, and text.py, which lays its report out

None of it imports PyTorch: the calculator answers in a fraction of a second.
"""

from nanogpt2.flops.counting import (
    count_params,
    forward_matmul_flops,
    kaplan_flops_per_token,
    lora_training_flops_per_token,
    mfu,
    muon_flops_per_step,
    newton_schulz_flops,
    tokens_per_second,
    training_flops,
    training_flops_per_token,
)

__all__ = [
    "count_params",
    "forward_matmul_flops",
    "kaplan_flops_per_token",
    "lora_training_flops_per_token",
    "mfu",
    "muon_flops_per_step",
    "newton_schulz_flops",
    "tokens_per_second",
    "training_flops",
    "training_flops_per_token",
]
