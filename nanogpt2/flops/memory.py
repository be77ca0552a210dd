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

The activations saved for the backward pass are listed tensor by tensor in
memory_activations.py (Korthikanti et al.'s method), the bytes that last the whole run
(weights, gradients, moments; bf16 parameters, 8-bit moments, LoRA) in memory_state.py,
and the bytes alive at each moment of the step (below) in memory_phases.py.

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
bf16, 12V in fp32, which GPT-2's 50K-word vocabulary makes the usual peak; the LM
head's backward, which forms the embedding's (V, C) weight gradient; with
activation checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear
Memory Cost") the backward of one recomputed block; the end of the backward pass,
where the token embedding's two gradients (the LM head's, which autograd holds from
the head's backward on, and the embedding's own) are summed into a third tensor; and
the optimizer step, with the scratch of torchao's 8-bit update.
Gradients exist during the backward pass only from the second micro-step of
gradient accumulation on (zero_grad(set_to_none) frees them after each step), and
the loop holds the step's micro-batches of token ids throughout. Without accumulation
and with checkpointing, the gradients of the blocks already done are alive while the
first block is recomputed. DDP keeps a second copy of the gradients in its all-reduce
buckets.

The memory-saving options of training change these moments: bf16 parameters
(param_dtype) halve weights and gradients and leave autocast nothing to copy; a
chunked loss (loss_chunk_tokens, GPT.chunked_loss) replaces the whole loss's
tensors by one chunk's, in the forward pass and again in its recompute; LoRA keeps
gradients and moments for the adapters only, and its frozen matmuls save nothing;
the optimizer step in backward (optimizer_in_backward) frees each gradient as soon
as it is formed, so gradients never add up.

So the peak counts the bytes of live tensors. tests/test_memory.py checks the saved
activations byte for byte, and the peak within 5%, against a training step traced
as CUDA runs it, on fake tensors (bench/memory.py), at small shapes, for every option
and the combinations --fit uses; bench/memory.py compares the peak at GPT-2's sizes with
that trace, or with a GPU's torch.cuda.max_memory_allocated. The latter also counts what
is not a tensor: kernel workspaces (cuBLAS, FlashAttention's backward) and the allocator's
rounding, so it reads a little above the estimate, a gap left (with fragmentation) to
ALLOCATOR_SLACK. The CUDA context (kernels, cuBLAS) sits outside PyTorch's allocator and
is allowed for separately. bench/README.md records what these comparisons measured.

This is eager PyTorch. torch.compile can need more memory than this estimate, not less: with
checkpointing (config/finetune_large.py's first recipe) the compiled step peaked above the
eager one and the estimate; bench/README.md records the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nanogpt2.errors import UserError, check_positive_int
from nanogpt2.flops.memory_phases import Step, step_phases, step_terms
from nanogpt2.flops.memory_state import (  # noqa: F401  (all but PARAM_BYTES: re-exported)
    PARAM_BYTES,
    lora_widths,
    optimizer_state_bytes,
    param_shapes,
)
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
    weights: int  # parameters (fp32, bf16, or a LoRA base and its fp32 adapters)
    gradients: int  # .grad of every trained tensor
    gradients_live: bool  # do gradients exist during the backward pass (gradient accumulation)?
    optimizer: int  # AdamW's two moments (fp32, or 8-bit codes and block scales)
    ddp_buckets: int  # DistributedDataParallel's gradient buckets
    gathered: int  # sharded (shards > 1): the root's and one block's whole weights, gathered beside the shards
    low_precision_weights: int  # bf16 weight copies autocast makes of fp32 weights, kept for the backward pass
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
        """Peak bytes of live tensors. torch.cuda.max_memory_allocated() reports a little more (module docstring)."""
        return max(self.phases.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda phase: self.phases[phase])

    def device_bytes(self) -> int:
        """What the GPU must hold: the peak, plus allocator slack, plus the CUDA context."""
        return int(self.peak * (1 + ALLOCATOR_SLACK)) + CUDA_CONTEXT_BYTES

    def fits(self, memory_bytes: int) -> bool:
        return self.device_bytes() <= memory_bytes


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
    param_dtype: str = "float32",
    loss_chunk_tokens: int = 0,
    optimizer_in_backward: bool = False,
    lora_rank: int = 0,
    lora_targets: str = "attn",
    lora_base_dtype: str = "float32",
    shards: int = 1,
) -> MemoryEstimate:
    """Peak GPU memory of one AdamW training step of a GPT (nanogpt2/model.py), in the steady state.

    batch_size:    sequences per micro-step (per GPU); seq_len defaults to config.block_size.
    dtype:         the autocast dtype (bfloat16, float16) or float32 (no autocast).
    attention:     flash (the fused kernel F.scaled_dot_product_attention picks on a GPU) or math.
    checkpointing: recompute each block in the backward pass instead of saving its activations.
    grad_accum:    micro-steps per optimizer step; from the second on, gradients are held throughout.
    ddp:           DistributedDataParallel's gradient buckets (gradient_as_bucket_view=False).
    hold_logits:   the training loop keeps the logits alive through backward (`logits, loss = model(x, y)`);
                   nanogpt2/train/trainer.py keeps only the loss, so the default is False.
    optimizer:     adamw (fp32 moments) or adamw8bit (memory_state.optimizer_state_bytes).
    param_dtype:   float32, or bfloat16: the whole model cast to bf16 (bf16 gradients too); needs adamw8bit.
    loss_chunk_tokens: the model's chunked loss (GPT.chunked_loss): N tokens' logits at a time, recomputed.
    optimizer_in_backward: each tensor updated by a post-accumulate-grad hook and its gradient freed at once
                   (grad_accum 1, no DDP, no gradient clipping).
    lora_rank, lora_targets, lora_base_dtype: LoRA adapters (nanogpt2.lora.apply_lora) on a frozen base.
    shards:        FSDP over this many processes (parallel=fsdp): one process's shards of the weights,
                   gradients and moments, and the whole tensors it gathers beside them (memory_state.py).
    """
    seq_len = config.block_size if seq_len is None else seq_len
    _check(config, batch_size, seq_len, dtype, attention, grad_accum)
    recipe = (optimizer, param_dtype, loss_chunk_tokens, optimizer_in_backward, lora_rank, lora_base_dtype)
    _check_recipe(dtype, grad_accum, ddp, *recipe)
    _check_shards(shards, ddp, *recipe)
    step = Step(
        config=config,
        batch_size=batch_size,
        seq_len=seq_len,
        act_bytes=ACT_BYTES[dtype],
        attention=attention,
        checkpointing=checkpointing,
        grad_accum=grad_accum,
        ddp=ddp,
        hold_logits=hold_logits,
        optimizer=optimizer,
        param_dtype=param_dtype,
        loss_chunk_tokens=loss_chunk_tokens,
        optimizer_in_backward=optimizer_in_backward,
        lora_rank=lora_rank,
        lora_targets=lora_targets,
        lora_base_dtype=lora_base_dtype,
        shards=shards,
    )
    terms = step_terms(step)  # the bytes every moment shares; step_phases adds each moment's own
    return MemoryEstimate(
        batch_size=batch_size,
        seq_len=seq_len,
        weights=terms.weights,
        gradients=terms.gradients,
        gradients_live=grad_accum > 1,
        optimizer=terms.optimizer,
        ddp_buckets=terms.ddp_buckets,
        gathered=terms.root_gathered + terms.block_gathered,
        low_precision_weights=terms.lowp_through_forward,
        block_activations=terms.embed + terms.saved_blocks,
        head_activations=terms.head,
        logits=terms.logits,
        loss_gradient=terms.loss_gradient,
        phases=step_phases(terms),
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


def _check_recipe(
    dtype: str,
    grad_accum: int,
    ddp: bool,
    optimizer: str,
    param_dtype: str,
    loss_chunk_tokens: int,
    optimizer_in_backward: bool,
    lora_rank: int,
    lora_base_dtype: str,
) -> None:
    """The memory-saving options: each valid, and only in the combinations training runs."""
    if optimizer not in ("adamw", "adamw8bit"):
        raise UserError(f"optimizer={optimizer!r}: use adamw or adamw8bit")
    for name, value in (("param_dtype", param_dtype), ("lora_base_dtype", lora_base_dtype)):
        if value not in PARAM_BYTES:
            raise UserError(f"{name}={value!r}: use float32 or bfloat16")
    if param_dtype == "bfloat16" and (optimizer != "adamw8bit" or dtype != "bfloat16"):
        raise UserError("param_dtype=bfloat16 trains with optimizer=adamw8bit under bfloat16 autocast; set both")
    for name, number in (("loss_chunk_tokens", loss_chunk_tokens), ("lora_rank", lora_rank)):
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise UserError(f"{name}={number!r} must be a whole number >= 0 (0: off)")
    if optimizer_in_backward and (grad_accum != 1 or ddp):
        raise UserError("optimizer_in_backward frees each gradient at once: use grad_accum=1 and no DDP")
    if lora_rank and param_dtype != "float32":
        raise UserError("under LoRA the frozen base's dtype is lora_base_dtype; leave param_dtype at float32")


def _check_shards(
    shards: int, ddp: bool, optimizer: str, param_dtype: str, _chunk: int, in_backward: bool, lora_rank: int, _base: str
) -> None:
    """FSDP shards fp32 AdamW training only (train/config.py refuses the rest with parallel=fsdp)."""
    check_positive_int("shards", shards)
    if shards == 1:
        return
    if ddp:
        raise UserError("shards > 1 is FSDP, which has no DDP buckets: drop ddp")
    if optimizer != "adamw" or param_dtype != "float32" or in_backward or lora_rank:
        raise UserError(
            "sharded (FSDP) training is fp32 AdamW on every weight: no adamw8bit, bf16 weights, step in backward, LoRA"
        )
