"""The bytes a training run holds from start to end: weights, gradients and optimizer moments.

memory.py adds what a step makes and frees (activations, the loss's tensors) to these. Per parameter
tensor (Rajbhandari et al. 2020, "ZeRO", 3.1, count 16 bytes per parameter for fp32 AdamW):

    weights     4 B fp32, or 2 B when the whole model is cast to bf16 (param_dtype="bfloat16");
                under LoRA the frozen base in lora_base_dtype and the adapters in fp32
    gradients   one per trained weight, in its dtype: 4 B, 2 B for bf16 parameters (accumulated in bf16
                across micro-steps), none for a frozen LoRA base
    moments     AdamW's two per trained weight: 8 B fp32; with adamw8bit about 2 B (below)

Sharded over N processes (parallel=fsdp, nanogpt2/train/fsdp.py), each process holds of every tensor the
rows ceil(rows / N) of its first dimension: all three terms divided by N, but for that rounding.

LoRA (Hu et al. 2021; nanogpt2/lora.py) trains only the adapters A (r, in) and B (out, r) beside each
targeted matrix of every block: for GPT-2 XL at r=16 on attention, 7.4M parameters instead of 1.56B.
"""

from __future__ import annotations

import math

from nanogpt2.errors import UserError
from nanogpt2.model_config import BLOCK_LINEARS, GPTConfig, lora_layers

PARAM_BYTES = {"float32": 4, "bfloat16": 2}


def lora_widths(targets: str) -> dict[str, tuple[int, int]]:
    """{layer: (inputs, outputs) in units of n_embd} of the block Linears LoRA adapts for `targets`."""
    return {path: BLOCK_LINEARS[path] for path in lora_layers(targets)}


def param_shapes(config: GPTConfig) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter tensor of nanogpt2/model.py's GPT (the LM head is tied to wte)."""
    C, T, Vp = config.n_embd, config.block_size, config.padded_vocab_size
    block: list[tuple[str, tuple[int, ...]]] = [
        ("ln_1.weight", (C,)),
        ("attn.c_attn.weight", (3 * C, C)),
        ("attn.c_proj.weight", (C, C)),
        ("ln_2.weight", (C,)),
        ("mlp.c_fc.weight", (4 * C, C)),
        ("mlp.c_proj.weight", (C, 4 * C)),
    ]
    if config.bias:
        block += [
            ("ln_1.bias", (C,)),
            ("attn.c_attn.bias", (3 * C,)),
            ("attn.c_proj.bias", (C,)),
            ("ln_2.bias", (C,)),
            ("mlp.c_fc.bias", (4 * C,)),
            ("mlp.c_proj.bias", (C,)),
        ]
    shapes: list[tuple[str, tuple[int, ...]]] = [("wte.weight", (Vp, C)), ("wpe.weight", (T, C))]
    shapes += [(f"h.{i}.{name}", shape) for i in range(config.n_layer) for name, shape in block]
    shapes += [("ln_f.weight", (C,))] + ([("ln_f.bias", (C,))] if config.bias else [])
    return shapes


def lora_shapes(config: GPTConfig, rank: int, targets: str = "attn") -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of the adapters nanogpt2.lora.apply_lora adds: A (rank, in) and B (out, rank) per target."""
    C = config.n_embd
    return [
        (f"h.{i}.{path}.{name}.weight", shape)
        for i in range(config.n_layer)
        for path, (win, wout) in lora_widths(targets).items()
        for name, shape in (("lora_A", (rank, win * C)), ("lora_B", (wout * C, rank)))
    ]


# torchao's AdamW8bit (nanogpt2/train/optim.py) quantizes a moment block-wise when its tensor has at least
# 4096 values in whole blocks of 256 (torchao/optim/adam.py, following bitsandbytes): 1 byte per value,
# one fp32 scale per block, and a 256-entry fp32 code table per tensor (torchao OptimState8bit).
# nanogpt2 keeps the embeddings' moments in fp32 (optim.adamw_8bit), and every unquantized moment is
# fp32 whatever the parameter's dtype.
BLOCK_8BIT, MIN_8BIT = 256, 4096


def quantized(name: str, numel: int, optimizer: str) -> bool:
    """Does this tensor get 8-bit moments?"""
    embedding = name in ("wte.weight", "wpe.weight")
    return optimizer == "adamw8bit" and not embedding and numel >= MIN_8BIT and numel % BLOCK_8BIT == 0


def trained_shapes(config: GPTConfig, lora_rank: int = 0, lora_targets: str = "attn") -> list:
    """(name, shape) of the tensors that get gradients and moments: all, or under LoRA the adapters."""
    return lora_shapes(config, lora_rank, lora_targets) if lora_rank else param_shapes(config)


def shard_numel(shape: tuple[int, ...], shards: int = 1) -> int:
    """Values of a tensor one process holds when it is cut into `shards` pieces along dim 0 (rank 0's, the largest:
    FSDP2 gives each process ceil(rows / shards) rows, padding the last pieces)."""
    return -(-shape[0] // shards) * math.prod(shape[1:])


def optimizer_state_bytes(
    config: GPTConfig, optimizer: str = "adamw", lora_rank: int = 0, lora_targets: str = "attn", shards: int = 1
) -> int:
    """Bytes of AdamW's two moments: 8 per trained parameter in fp32; about 2 with adamw8bit. Per process
    when sharded over `shards` processes (adamw only)."""
    if optimizer not in ("adamw", "adamw8bit"):
        raise UserError(f"optimizer={optimizer!r}: use adamw or adamw8bit")
    total = 0
    for name, shape in trained_shapes(config, lora_rank, lora_targets):
        numel = shard_numel(shape, shards)
        q = quantized(name, numel, optimizer)
        total += 2 * (numel + 4 * numel // BLOCK_8BIT + 4 * 256) if q else 8 * numel
    return total


def update_transient_bytes(numel: int, quantized: bool) -> int:
    """Scratch memory of torchao AdamW8bit's compiled update of one tensor of `numel` values.

    Inductor's kernel for single_param_adam (torchao/optim/adam.py) reads the moments, updates them in fp32
    and re-quantizes them; for 8-bit moments it writes the updated fp32 moments and their block maxima to
    buffers first (two fp32 tensors of the parameter's size and two of its block count), because the
    block-wise scale is a reduction over them. An unquantized tensor is one pointwise kernel: no buffers.
    Read from TORCH_LOGS=output_code for torch 2.13 on the CPU; bench/memory.py checks it on a GPU.
    PyTorch's fused AdamW updates in place: nothing."""
    return 2 * 4 * (numel + numel // BLOCK_8BIT) if quantized else 0


def update_transient_max(config: GPTConfig, optimizer: str, lora_rank: int = 0, lora_targets: str = "attn") -> int:
    """The largest update_transient_bytes over the trained tensors (0 for PyTorch's fused AdamW)."""
    if optimizer != "adamw8bit":
        return 0
    sizes = [(name, math.prod(shape)) for name, shape in trained_shapes(config, lora_rank, lora_targets)]
    return max(update_transient_bytes(n, quantized(name, n, optimizer)) for name, n in sizes)


def state_bytes(
    config: GPTConfig,
    *,
    param_dtype: str,
    optimizer: str,
    lora_rank: int,
    lora_targets: str,
    lora_base_dtype: str,
    shards: int = 1,
) -> tuple[int, int, int]:
    """(weights, gradients, moments) in bytes, of one process when sharded over `shards` (all trained, fp32)."""
    if shards > 1:
        held = 4 * sum(shard_numel(shape, shards) for _, shape in param_shapes(config))
        return held, held, optimizer_state_bytes(config, optimizer, shards=shards)
    base = sum(math.prod(shape) for _, shape in param_shapes(config))
    if lora_rank:
        adapters = sum(math.prod(shape) for _, shape in lora_shapes(config, lora_rank, lora_targets))
        weights, gradients = PARAM_BYTES[lora_base_dtype] * base + 4 * adapters, 4 * adapters
    else:
        weights = gradients = PARAM_BYTES[param_dtype] * base
    return weights, gradients, optimizer_state_bytes(config, optimizer, lora_rank, lora_targets)


def gathered_bytes(config: GPTConfig) -> tuple[int, int]:
    """(the root's, one block's) fp32 weights, which a sharded process (FSDP2, nanogpt2/train/fsdp.py) gathers
    whole beside its shards: the root's (embeddings, ln_f) from the start of the forward pass to the end of the
    backward pass, and each block's while it runs (memory_phases.py says how many blocks at which moment)."""
    shapes = param_shapes(config)
    block = sum(math.prod(shape) for name, shape in shapes if name.startswith("h.0."))
    root = sum(math.prod(shape) for name, shape in shapes if not name.startswith("h."))
    return 4 * root, 4 * block
