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
(weights, gradients, moments; bf16 parameters, 8-bit moments, LoRA) in memory_state.py.

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
that trace (within 0.1% for the 12 GB recipes), or with a GPU's
torch.cuda.max_memory_allocated. The latter also counts what is not a tensor:
kernel workspaces (cuBLAS, FlashAttention's backward) and the allocator's rounding,
0.07-0.31 GiB (1-2.5%) on an H100, left (with fragmentation) to ALLOCATOR_SLACK. The CUDA
context (kernels, cuBLAS) sits outside PyTorch's allocator and is allowed for separately.

This is eager PyTorch. torch.compile can need more, not less: gpt2-large with checkpointing
and 8-bit AdamW (config/finetune_large.py's first recipe) peaked at 11.32 GiB compiled against 10.35 GiB eager
on an H100 (bench/results/memory-h100-recipes-20261126.json), 10.18 GiB estimated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nanogpt2.errors import UserError, check_positive_int
from nanogpt2.flops.memory_activations import block_bytes, embedding_bytes, head_bytes, loss_saved_bytes
from nanogpt2.flops.memory_state import (  # noqa: F401  (param_shapes, optimizer_state_bytes: re-exported)
    LORA_TARGETS,
    PARAM_BYTES,
    optimizer_state_bytes,
    param_shapes,
    state_bytes,
    update_transient_max,
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
    """
    seq_len = config.block_size if seq_len is None else seq_len
    _check(config, batch_size, seq_len, dtype, attention, grad_accum)
    recipe = (optimizer, param_dtype, loss_chunk_tokens, optimizer_in_backward, lora_rank, lora_base_dtype)
    _check_recipe(dtype, grad_accum, ddp, *recipe)
    a = ACT_BYTES[dtype]
    autocast = a < 4
    C, L, V, Vp = config.n_embd, config.n_layer, config.vocab_size, config.padded_vocab_size
    n = batch_size * seq_len  # tokens per micro-step
    lora = lora_rank > 0
    trained = not lora  # are the base weights (the tied embedding above all) trained?
    bf16_stream = param_dtype == "bfloat16" or (lora and lora_base_dtype == "bfloat16")
    rs = 2 if bf16_stream else 4  # bytes of the residual stream: the embeddings' dtype
    chunk = min(loss_chunk_tokens, n)

    weights, gradients, optimizer_bytes = state_bytes(
        config,
        param_dtype=param_dtype,
        optimizer=optimizer,
        lora_base_dtype=lora_base_dtype,
        lora_rank=lora_rank,
        lora_targets=lora_targets,
    )
    gb = 4 if lora or param_dtype == "float32" else 2  # bytes per gradient value
    ddp_buckets = gradients if ddp else 0
    # bf16 copies autocast makes of fp32 weight matrices (the LM head's is the tied embedding). Of trained
    # weights it caches them until the forward pass ends, checkpointed or not; of frozen ones (a LoRA base)
    # it makes one per use, which lives only as long as a matmul saves it (its input needs a gradient: not
    # c_attn's in the first block).
    fp32_matrices = autocast and not bf16_stream
    block_lowp = 2 * 12 * C * C if fp32_matrices else 0
    head_lowp = 2 * Vp * C if fp32_matrices else 0
    blocks_lowp_saved = L * block_lowp - (2 * 3 * C * C if lora and fp32_matrices else 0)
    # The fp32 adapters' cached copies, saved by their matmuls but for the first block's c_attn lora_A: its input
    # needs no gradient.
    adapters_lowp = gradients // 2 - 2 * lora_rank * C if lora and autocast else 0
    lowp_through_forward = (blocks_lowp_saved if trained or not checkpointing else 0) + head_lowp + adapters_lowp
    # After it, those that matmuls saved: the head's is not, when the loss chunks are checkpointed.
    lowp_after_forward = (0 if checkpointing else blocks_lowp_saved + adapters_lowp) + (0 if chunk else head_lowp)

    ln_copies = bf16_stream and autocast
    per_block, first_block = (
        block_bytes(
            config,
            batch_size,
            seq_len,
            a,
            attention,
            lora_rank=lora_rank,
            lora_targets=lora_targets,
            first=first,
            ln_copies=ln_copies,
        )
        for first in (False, True)
    )
    embed = embedding_bytes(config, batch_size, seq_len, trained)
    # With checkpointing, only each block's input (the residual stream) is kept.
    saved_blocks = L * rs * C * n if checkpointing else (L - 1) * per_block + first_block
    head = head_bytes(config, n, a, trained=trained, chunked=bool(chunk), ln_copies=ln_copies)
    loss_saved = 0 if chunk else loss_saved_bytes(config, n, a)
    logits = a * Vp * n if hold_logits and not chunk else 0
    loss_gradient = 0 if chunk else (4 * V * n if autocast else 8 * V * n)

    grads_now = gradients if grad_accum > 1 else 0
    ids = 16 * n * grad_accum  # the step's micro-batches of int64 inputs and targets, all loaded
    static = weights + optimizer_bytes + ddp_buckets + grads_now + ids
    acts = embed + saved_blocks + head
    # The tied embedding's gradient from the LM head waits (in autograd's input buffer, beside any .grad)
    # until the embedding's own arrives at the very end of the backward pass.
    wte_grad = gb * Vp * C if trained else 0
    phases: dict[str, int] = {}
    if chunk:
        # The largest chunk's loss in the forward pass: its LM-head input, logits, log-probabilities and
        # their fp32 copy. In backward each chunk is recomputed (with a new bf16 copy of fp32 weights) and
        # then its gradients formed: nll_loss's fp32 one; later the logits' and the chunk's share of the
        # embedding's weight gradient (bf16, summed over chunks), while ln_f's output gradient fills up.
        forward_chunk = (a * C + a * Vp + a * V + (4 * V if autocast else 0)) * chunk
        phases["forward (loss chunk)"] = static + lowp_through_forward + acts + forward_chunk
        saved_chunk = (a * C if trained else 0) * chunk + head_lowp + loss_saved_bytes(config, chunk, a)
        nll_grad = (4 * V if autocast else 8 * V) * chunk
        head_grad = (a * C * chunk if trained else 0) + a * Vp * chunk + a * C * chunk + head_lowp
        head_grad += a * Vp * C if trained else 0
        summed = a * Vp * C if trained and n > chunk else 0
        phases["backward (loss chunk)"] = (
            static + lowp_after_forward + acts + summed + 4 * C * (n - chunk) + max(saved_chunk + nll_grad, head_grad)
        )
    else:
        # The forward pass ends inside cross-entropy: the logits (the LM head's output, of which a padded
        # vocabulary's first V columns are a view), ln_f's fp32 output (which forward() holds in a
        # variable), and what the loss saved.
        forward_logits = a * Vp * n + (4 * C * n if autocast else 0)
        phases["forward (loss)"] = static + lowp_through_forward + acts + forward_logits
        # The backward pass starts with nll_loss's gradient, fp32 (n, V), beside what the loss saved. In fp32,
        # log_softmax's backward then makes a second fp32 (n, V) gradient while the first is alive; under
        # autocast the fp32 copy is freed first and the rest is 16-bit, so that moment is smaller.
        phases["backward (loss gradient)"] = static + lowp_after_forward + acts + logits + loss_gradient
        # Then the LM head: the logits' gradient (padded width) and ln_f's, and the embedding's weight
        # gradient (bf16 under autocast, then an fp32 copy of it for fp32 weights).
        if trained:
            wgrad = max(a * Vp * n, (4 * Vp * C if fp32_matrices else 0)) + a * Vp * C
            phases["backward (LM head)"] = static + lowp_after_forward + acts - loss_saved + logits + a * C * n + wgrad
    if trained:
        # The backward pass ends with the embeddings: the token embedding's own gradient joins the LM head's,
        # and autograd adds them into a third tensor, beside every other gradient formed by then.
        formed = 0 if optimizer_in_backward else gradients - (wte_grad if grad_accum == 1 else 0)
        phases["backward (embedding)"] = weights + optimizer_bytes + ddp_buckets + ids + logits + formed + 3 * wte_grad
    if not optimizer_in_backward:
        update = update_transient_max(config, optimizer, lora_rank, lora_targets)
        phases["optimizer step"] = weights + gradients + optimizer_bytes + ddp_buckets + ids + logits + update
    if checkpointing:
        # Block i recomputed, from the last block to the first: its activations (and bf16 copies of its fp32
        # weights), approximately the gradients flowing through it (two residual-stream gradients and two of
        # the 4C-wide MLP tensors), the inputs of blocks 0..i still saved, and the gradients formed so far:
        # all of them with accumulation, else the tied embedding's (waiting for the embedding's) and ln_f's
        # and those of blocks i+1 on; with the update in backward, only the embedding's. Both change
        # linearly with i, so the first or the last block is the worst.
        transient = (2 * rs * C + 2 * 4 * a * C) * n
        block_input = rs * C * n
        if grad_accum > 1 or not trained:
            held = L * block_input + wte_grad
        elif optimizer_in_backward:
            # A weight is updated once its gradient is complete, after the block's backward has used up the
            # tensors it needed: the update's scratch stands in for those transients, it does not add to them.
            held = L * block_input + wte_grad
            transient = max(transient, update_transient_max(config, optimizer))
        else:
            ln_f = gb * (2 * C if config.bias else C)
            block_grads = (gradients - gb * (Vp * C + config.block_size * C) - ln_f) // L
            held = wte_grad + ln_f + max(L * block_input, block_input + (L - 1) * block_grads)
        if lora and grad_accum == 1:
            held += gradients
        phases["backward (recomputed block)"] = (
            static + embed + held + logits + per_block + block_lowp + adapters_lowp // L + transient
        )
    return MemoryEstimate(
        batch_size=batch_size,
        seq_len=seq_len,
        weights=weights,
        gradients=gradients,
        gradients_live=grad_accum > 1,
        optimizer=optimizer_bytes,
        ddp_buckets=ddp_buckets,
        low_precision_weights=lowp_through_forward,
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
