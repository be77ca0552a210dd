"""Will it fit? The GPU memory one training step of GPT-2 needs, term by term.

Training memory is a few big terms (Rajbhandari et al. 2020, "ZeRO", 3.1, for the
per-parameter bytes; Korthikanti et al. 2022, "Reducing Activation Recomputation
in Large Transformer Models", 4.1, for the activations):

    per parameter    4 B fp32 weight + 4 B fp32 gradient + 8 B AdamW moments (exp_avg, exp_avg_sq)
                     + 2 B bf16 copy of each weight matrix, which autocast makes and autograd keeps
                     for the backward pass
    per token        what autograd saves in each block for the backward pass, the loss's
                     log-probabilities (and under autocast the fp32 copy nll_loss keeps), and
                     the loss's gradient while it is formed

The activation accounting follows Korthikanti et al.'s method (list each tensor
a layer saves, in bytes) for what PyTorch autocast actually saves in
nanogpt2/model.py, per token, per block, with C = n_embd, a = bytes per
activation (2 under bf16/fp16 autocast, 4 in fp32):

    2 x 4C   the inputs of ln_1 and ln_2: the residual stream, fp32 even under autocast
             (embeddings are fp32 and LayerNorm runs in fp32), where Korthikanti et al. have 2 x 2C
    2 x aC   LayerNorm outputs, cast for the c_attn and c_fc matmuls
    3aC + aC q, k, v (views of c_attn's output) and the attention output, which fused
             attention (FlashAttention, Dao et al. 2022) saves instead of the T x T
             attention matrix, plus its 4-byte log-sum-exp per head (and 24 bytes of RNG state)
    2 x 4aC  GELU's input and output (the MLP is 4C wide)
    2 x C    dropout masks, 1 byte per element, when dropout > 0
    16       LayerNorm means and reciprocal standard deviations (fp32)

i.e. 8C + 14aC per token per layer: 36C bytes in bf16 where Korthikanti et al.,
with a 16-bit residual stream, count 32C (34C with their two dropout masks).
The unfused ("math") attention path instead saves the fp32 T x T probabilities
of every head: the s^2 term of Korthikanti's 34sbh + 5as^2b.

The loss, with V = vocabulary size: cross_entropy runs log_softmax in the logits'
dtype (it passes that dtype explicitly, which CUDA autocast respects) and saves its
output (aV per token); nll_loss is on CUDA autocast's fp32 list, so it makes and
saves an fp32 copy (4V); its backward pass then starts with an fp32 gradient (4V).
(CPU autocast differs: it casts cross_entropy's input to fp32 as a whole.)

The peak is the largest of a few moments of a step (`MemoryEstimate.phases`):
the end of the forward pass, inside cross-entropy, when the logits (aV per token),
the log-probabilities and their fp32 copy are all alive, and so are every bf16
weight copy (autocast caches them until the forward pass ends, also for checkpointed
blocks) and ln_f's fp32 output; the start of the backward
pass, when nll_loss's gradient joins what the loss saved: 10V bytes per token under
bf16, 12V in fp32, which GPT-2's 50K-word vocabulary makes the usual peak; with
activation checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear
Memory Cost") the backward of one recomputed block; and the optimizer step.
Gradients exist during the backward pass only from the second micro-step of
gradient accumulation on (zero_grad(set_to_none) frees them after each step), and
the loop holds the step's micro-batches of token ids throughout. Without accumulation
and with checkpointing, the gradients of the blocks already done are alive while the
first block is recomputed. DDP keeps a second copy of the gradients in its all-reduce
buckets.

So the peak counts the bytes of live tensors. tests/test_memory.py checks the saved
activations byte for byte, and the peak within 5%, against a training step traced
as CUDA runs it, on fake tensors (bench/memory.py), at small shapes; bench/memory.py
compares the peak at GPT-2's sizes with that trace, or with a GPU's
torch.cuda.max_memory_allocated. The latter also counts what is not a tensor:
kernel workspaces (cuBLAS, FlashAttention's backward) and the allocator's rounding,
0.07-0.31 GiB (1-2%) on an H100, left (with fragmentation) to ALLOCATOR_SLACK. The CUDA
context (kernels, cuBLAS) sits outside PyTorch's allocator and is allowed for separately.

This is eager PyTorch; torch.compile usually needs less (it fuses the loss and
saves fewer intermediates), so "fits" here is on the safe side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from nanogpt2.errors import UserError, check_positive_int
from nanogpt2.flops.counting import count_params
from nanogpt2.model_config import GPTConfig

GiB = 2**30
CUDA_CONTEXT_BYTES = 512 * 2**20
"""Allowance for the CUDA context outside PyTorch's allocator (driver, kernels, cuBLAS/cuDNN
handles): typically 0.3-0.6 GiB with lazy module loading. A desktop's display takes more."""
ALLOCATOR_SLACK = 0.05
"""Allowance for the caching allocator's fragmentation (reserved minus allocated memory)."""

ACT_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of GPU memory for one training step, by term, and the peak over the step's phases."""

    batch_size: int
    seq_len: int
    weights: int  # fp32 parameters
    gradients: int  # fp32 .grad
    gradients_live: bool  # do gradients exist during the backward pass (gradient accumulation)?
    optimizer: int  # AdamW's two moments (fp32, or 8-bit codes and block scales)
    ddp_buckets: int  # DistributedDataParallel's gradient buckets
    low_precision_weights: int  # bf16 weight copies kept for the backward pass (autocast)
    block_activations: int  # saved for backward by the transformer blocks (and embeddings)
    head_activations: int  # saved for backward by ln_f, the LM head and the loss
    logits: int  # the logits, if the training loop holds them through backward (hold_logits)
    loss_gradient: int  # fp32 gradient(s) formed at the start of cross-entropy's backward pass
    phases: dict[str, int] = field(default_factory=dict)  # candidate peaks, by moment of the step

    @property
    def activations(self) -> int:
        return self.block_activations + self.head_activations

    @property
    def peak(self) -> int:
        """Peak bytes of live tensors. torch.cuda.max_memory_allocated() reports 1-3% more (module docstring)."""
        return max(self.phases.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda phase: self.phases[phase])

    def device_bytes(self) -> int:
        """What the GPU must hold: the peak, plus allocator slack, plus the CUDA context."""
        return int(self.peak * (1 + ALLOCATOR_SLACK)) + CUDA_CONTEXT_BYTES

    def fits(self, memory_bytes: int) -> bool:
        return self.device_bytes() <= memory_bytes


def block_bytes(config: GPTConfig, batch_size: int, seq_len: int, act_bytes: int, attention: str = "flash") -> int:
    """Bytes one transformer block saves for the backward pass over a micro-batch (see the module docstring)."""
    C, nh, a, T = config.n_embd, config.n_head, act_bytes, seq_len
    b = 2 * 4 * C  # per token: ln_1 and ln_2 inputs, the fp32 residual stream
    b += 2 * 2 * 4  # their fp32 means and reciprocal standard deviations
    b += 2 * a * C  # the LayerNorm outputs as the c_attn and c_fc matmuls' inputs
    if attention == "flash":
        b += 3 * a * C + a * C  # q, k, v; the output (c_proj's input)
        # Log-sum-exp, fp32 per head and query, and the kernel's RNG seed and offset. For fp32 inputs
        # CUDA runs the memory-efficient kernel instead of FlashAttention: it pads each row of
        # log-sum-exp to a multiple of 32 queries, and its seed and offset are 8 bytes each, not 16 and 8.
        lse = 4 * nh * (T if a < 4 else -(-T // 32) * 32)
        rng = 24 if a < 4 else 16
    else:  # math: scaled q, k and v in fp32, fp32 probabilities (nh, T) per query, the output
        b += 3 * 4 * C + 4 * nh * T + a * C
        if config.dropout > 0:
            b += 5 * nh * T  # the probabilities' dropout mask (1 B) and dropped copy (4 B)
        lse = rng = 0
    b += 2 * 4 * a * C  # GELU's input and output
    if config.dropout > 0:
        b += 2 * C  # the two residual dropout masks (bool)
    return b * batch_size * T + lse * batch_size + rng


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


# torchao's AdamW8bit (nanogpt2/optim.py) quantizes a moment block-wise when its tensor has at least
# 4096 values in whole blocks of 256 (torchao/optim/adam.py, following bitsandbytes): 1 byte per value,
# one fp32 scale per block, and a 256-entry fp32 code table per tensor (torchao OptimState8bit).
# nanogpt2 keeps the embeddings' moments in fp32 (optim.adamw_8bit).
BLOCK_8BIT, MIN_8BIT = 256, 4096


def optimizer_state_bytes(config: GPTConfig, optimizer: str = "adamw") -> int:
    """Bytes of AdamW's two moments: 8 per parameter in fp32; about 2 with adamw8bit."""
    if optimizer not in ("adamw", "adamw8bit"):
        raise UserError(f"optimizer={optimizer!r}: use adamw or adamw8bit")
    total = 0
    for name, shape in param_shapes(config):
        numel = math.prod(shape)
        quantized = (
            optimizer == "adamw8bit"
            and name not in ("wte.weight", "wpe.weight")
            and numel >= MIN_8BIT
            and numel % BLOCK_8BIT == 0
        )
        total += 2 * (numel + 4 * numel // BLOCK_8BIT + 4 * 256) if quantized else 8 * numel
    return total


def estimate_training_memory(
    config: GPTConfig,
    batch_size: int,
    seq_len: int | None = None,
    *,
    dtype: str = "bfloat16",
    attention: str = "flash",
    checkpointing: bool = False,
    grad_accum: int = 1,
    ddp: bool = False,
    hold_logits: bool = False,
    optimizer: str = "adamw",
) -> MemoryEstimate:
    """Peak GPU memory of one AdamW training step of a GPT (nanogpt2/model.py), in the steady state.

    batch_size:    sequences per micro-step (per GPU); seq_len defaults to config.block_size.
    dtype:         the autocast dtype (bfloat16, float16) or float32 (no autocast).
    attention:     flash (the fused kernel F.scaled_dot_product_attention picks on a GPU) or math.
    checkpointing: recompute each block in the backward pass instead of saving its activations.
    grad_accum:    micro-steps per optimizer step; from the second on, gradients are held throughout.
    ddp:           DistributedDataParallel's gradient buckets (gradient_as_bucket_view=False).
    hold_logits:   the training loop keeps the logits alive through backward (`logits, loss = model(x, y)`);
                   nanogpt2/trainer.py keeps only the loss, so the default is False.
    optimizer:     adamw (fp32 moments) or adamw8bit (see optimizer_state_bytes).
    """
    seq_len = config.block_size if seq_len is None else seq_len
    _check(config, batch_size, seq_len, dtype, attention, grad_accum)
    a = ACT_BYTES[dtype]
    C, L, V, Vp = config.n_embd, config.n_layer, config.vocab_size, config.padded_vocab_size
    n = batch_size * seq_len  # tokens per micro-step
    count = count_params(config)
    P = count.total

    weights, gradients, optimizer_bytes = 4 * P, 4 * P, optimizer_state_bytes(config, optimizer)
    ddp_buckets = 4 * P if ddp else 0
    # bf16 copies of every matmul weight (the LM head's is the tied embedding) that autocast makes
    # and the backward pass needs; none in fp32.
    head_lowp = 2 * Vp * C if a < 4 else 0
    block_lowp = 2 * 12 * C * C if a < 4 else 0
    all_lowp = L * block_lowp + head_lowp

    # Embeddings: token ids (int64) saved by wte, position ids by wpe, the dropout mask if any.
    embed = 8 * n + 8 * seq_len + (n * C if config.dropout > 0 else 0)
    per_block = block_bytes(config, batch_size, seq_len, a, attention)
    saved_blocks = L * 4 * C * n if checkpointing else L * per_block  # checkpointing keeps block inputs only
    # Head: ln_f's fp32 input and statistics, the LM head's input, the targets, nll_loss's scalar total
    # weight, and the loss. cross_entropy runs log_softmax in the logits' dtype (it passes that dtype
    # explicitly, and CUDA autocast keeps an explicit dtype) and saves its output; under autocast,
    # nll_loss (on CUDA autocast's fp32 list) makes an fp32 copy of those log-probabilities and saves it.
    loss_saved = a * V * n + (4 * V * n if a < 4 else 0)
    head = (4 * C + 8 + a * C + 8) * n + loss_saved + 4
    logits = a * Vp * n if hold_logits else 0
    # While cross-entropy runs, the logits (the LM head's output; a padded vocabulary's first V columns
    # are a view of it) are alive too, and so is ln_f's fp32 output, which forward() holds in a variable.
    forward_logits = a * Vp * n + 4 * C * n
    # The backward pass starts with nll_loss's gradient, fp32 (n, V), beside what the loss saved. In fp32,
    # log_softmax's backward then makes a second fp32 (n, V) gradient while the first is alive; under
    # autocast the fp32 copy is freed first and the rest is 16-bit, so that moment is smaller.
    loss_gradient = 4 * V * n if a < 4 else 8 * V * n

    grads_now = gradients if grad_accum > 1 else 0
    other_ids = 16 * n * (grad_accum - 1)  # the step's other micro-batches (int64 inputs and targets), loaded
    static = weights + optimizer_bytes + ddp_buckets + grads_now + other_ids
    acts = embed + saved_blocks + head
    phases = {
        # Autocast's weight cache holds every bf16 copy until the forward pass ends, checkpointed or not.
        "forward (loss)": static + all_lowp + acts + forward_logits,
        "backward (loss gradient)": static + (head_lowp if checkpointing else all_lowp) + acts + logits + loss_gradient,
        "optimizer step": weights + gradients + optimizer_bytes + ddp_buckets + 16 * n * grad_accum + logits,
    }
    if checkpointing:
        # Block i recomputed, from the last block to the first: its full activations and bf16 weights,
        # (approximately) the gradients flowing through it (two fp32 residual-stream gradients and two
        # of the 4C-wide MLP tensors), the inputs of blocks 0..i still saved, and, without gradient
        # accumulation, the gradients formed so far: the head's (the tied embedding, ln_f) and those
        # of blocks i+1 on. Both change linearly with i, so the first or the last block is the worst.
        transient = (2 * 4 * C + 2 * 4 * a * C) * n
        block_input = 4 * C * n
        if grad_accum > 1:  # all gradients are in `static`
            held = L * block_input
        else:
            ln_f = 2 * C if config.bias else C
            head_grads = 4 * (Vp * C + ln_f)
            block_grads = (P - count.token_embedding - count.position_embedding - ln_f) // L * 4
            held = head_grads + max(L * block_input, block_input + (L - 1) * block_grads)
        phases["backward (recomputed block)"] = (
            static + head_lowp + acts - saved_blocks - loss_saved + held + logits + per_block + block_lowp + transient
        )
    return MemoryEstimate(
        batch_size=batch_size,
        seq_len=seq_len,
        weights=weights,
        gradients=gradients,
        gradients_live=grad_accum > 1,
        optimizer=optimizer_bytes,
        ddp_buckets=ddp_buckets,
        low_precision_weights=all_lowp,
        block_activations=embed + saved_blocks,
        head_activations=head,
        logits=logits,
        loss_gradient=loss_gradient,
        phases=phases,
    )


def max_batch_size(config: GPTConfig, memory_bytes: int, seq_len: int | None = None, **options) -> int:
    """The largest micro-batch whose estimate fits in memory_bytes (0 if not even one sequence fits).

    options: as for estimate_training_memory. The estimate grows with the batch size, so a
    doubling search and then bisection find the boundary."""

    def fits(b: int) -> bool:
        return estimate_training_memory(config, b, seq_len, **options).fits(memory_bytes)

    if not fits(1):
        return 0
    hi = 2
    while fits(hi):
        if hi >= 2**24:  # a million sequences: the memory figure is not a GPU's
            return hi
        hi *= 2
    lo = hi // 2  # fits(lo) and not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _check(config: GPTConfig, batch_size: int, seq_len: int, dtype: str, attention: str, grad_accum: int) -> None:
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("grad_accum", grad_accum)):
        check_positive_int(name, value)
    if seq_len > config.block_size:
        raise UserError(f"seq_len {seq_len} is longer than the model's block_size {config.block_size}")
    if dtype not in ACT_BYTES:
        raise UserError(f"dtype={dtype!r}: use one of {', '.join(ACT_BYTES)}")
    if attention not in ("flash", "math"):
        raise UserError(f"attention={attention!r}: use flash (fused) or math (explicit softmax(QK^T)V)")
