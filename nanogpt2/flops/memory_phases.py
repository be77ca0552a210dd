"""The moments of one training step at which its memory can peak, each with the bytes alive then.

estimate_training_memory (memory.py, whose docstring tells the whole story) describes the step as a Step,
computes the terms its moments share once (StepTerms: what lasts the whole run, autocast's bf16 weight
copies, the activations saved for the backward pass), and takes MemoryEstimate.phases from step_phases.
Each function below adds what its moment forms and frees, in bytes, with n tokens per micro-step,
C = n_embd, V the vocabulary, Vp its padded width and a bytes per activation:

    forward (loss), backward (loss gradient), backward (LM head)   loss_phases
    forward (loss chunk), backward (loss chunk)                    chunked_loss_phases (loss_chunk_tokens)
    backward (embedding)                                           embedding_backward_bytes (base trained)
    optimizer step                                                 optimizer_step_bytes (not in backward)
    backward (recomputed block)                                    recomputed_block_bytes (checkpointing)
    backward (last block)                                          last_block_backward_bytes (sharded)
"""

from __future__ import annotations

from dataclasses import dataclass

from nanogpt2.flops.memory_activations import block_bytes, embedding_bytes, head_bytes, loss_saved_bytes
from nanogpt2.flops.memory_state import gathered_bytes, state_bytes, update_transient_max
from nanogpt2.model_config import GPTConfig


@dataclass(frozen=True)
class Step:
    """One training step: the model, one micro-batch, and the options that change its memory.

    The fields are estimate_training_memory's arguments (checked there), with act_bytes for its dtype."""

    config: GPTConfig
    batch_size: int
    seq_len: int
    act_bytes: int  # a: bytes per activation, 2 under bf16/fp16 autocast, 4 in fp32 (no autocast)
    attention: str
    checkpointing: bool
    grad_accum: int
    ddp: bool
    hold_logits: bool
    optimizer: str
    param_dtype: str
    loss_chunk_tokens: int
    optimizer_in_backward: bool
    lora_rank: int
    lora_targets: str
    lora_base_dtype: str
    shards: int = 1  # processes the state is sharded over (parallel=fsdp); 1: not sharded

    @property
    def tokens(self) -> int:
        """n: tokens per micro-step."""
        return self.batch_size * self.seq_len

    @property
    def autocast(self) -> bool:
        return self.act_bytes < 4

    @property
    def lora(self) -> bool:
        return self.lora_rank > 0

    @property
    def trained(self) -> bool:
        """Are the base weights (the tied embedding above all) trained? Not under LoRA."""
        return not self.lora

    @property
    def bf16_stream(self) -> bool:
        """Are the weights themselves bf16 (bf16 parameters, or a bf16 LoRA base)?"""
        return self.param_dtype == "bfloat16" or (self.lora and self.lora_base_dtype == "bfloat16")

    @property
    def residual_bytes(self) -> int:
        """Bytes per value of the residual stream: the embeddings' dtype."""
        return 2 if self.bf16_stream else 4

    @property
    def grad_bytes(self) -> int:
        """Bytes per gradient value: fp32, but for bf16 parameters (a LoRA base has none; adapters are fp32)."""
        return 4 if self.lora or self.param_dtype == "float32" else 2

    @property
    def fp32_matrices(self) -> bool:
        """Does autocast make bf16 copies of fp32 weight matrices?"""
        return self.autocast and not self.bf16_stream

    @property
    def chunk(self) -> int:
        """Tokens per chunk of the chunked loss (0: the whole loss at once)."""
        return min(self.loss_chunk_tokens, self.tokens)


@dataclass(frozen=True)
class StepTerms:
    """The bytes the moments of a step share, computed once by step_terms."""

    step: Step
    # What lasts the whole step.
    weights: int  # parameters (fp32, bf16, or a LoRA base and its fp32 adapters)
    gradients: int  # .grad of every trained tensor
    optimizer: int  # AdamW's two moments
    ddp_buckets: int  # DistributedDataParallel's gradient buckets
    root_gathered: int  # sharded: the root's whole fp32 weights, gathered beside the shards (gathered_bytes)
    block_gathered: int  # sharded: one block's
    ids: int  # the step's micro-batches of int64 inputs and targets, all loaded
    static: int  # weights, moments, buckets and ids, and the gradients if accumulation holds them throughout
    # bf16 copies autocast makes of fp32 weight matrices.
    block_lowp: int  # one block's
    head_lowp: int  # the LM head's (the tied embedding's)
    adapters_lowp: int  # every LoRA adapter's, saved by their matmuls
    lowp_through_forward: int  # those alive at the end of the forward pass
    lowp_after_forward: int  # those the backward pass still needs
    # Saved for the backward pass.
    per_block: int  # by one block (not the first)
    embed: int  # by the embeddings
    saved_blocks: int  # by every block, or with checkpointing each block's input
    head: int  # by ln_f, the LM head and the loss
    acts: int  # embed + saved_blocks + head
    loss_saved: int  # by the (whole, unchunked) loss alone, part of head
    # The loss.
    logits: int  # held by the training loop through backward (hold_logits)
    loss_gradient: int  # fp32 gradient(s) formed at the start of cross-entropy's backward pass
    wte_grad: int  # the tied embedding's (Vp, C) gradient from the LM head


def step_terms(s: Step) -> StepTerms:
    """The bytes shared by the moments of step s (StepTerms)."""
    config = s.config
    C, L, V, Vp = config.n_embd, config.n_layer, config.vocab_size, config.padded_vocab_size
    n, a, chunk = s.tokens, s.act_bytes, s.chunk

    weights, gradients, optimizer_bytes = state_bytes(
        config,
        param_dtype=s.param_dtype,
        optimizer=s.optimizer,
        lora_base_dtype=s.lora_base_dtype,
        lora_rank=s.lora_rank,
        lora_targets=s.lora_targets,
        shards=s.shards,
    )
    ddp_buckets = gradients if s.ddp else 0
    root_gathered, block_gathered = gathered_bytes(config) if s.shards > 1 else (0, 0)
    grads_now = gradients if s.grad_accum > 1 else 0
    ids = 16 * n * s.grad_accum
    # bf16 copies autocast makes of fp32 weight matrices (the LM head's is the tied embedding). Of trained
    # weights it caches them until the forward pass ends, checkpointed or not; of frozen ones (a LoRA base)
    # it makes one per use, which lives only as long as a matmul saves it (its input needs a gradient: not
    # c_attn's in the first block).
    block_lowp = 2 * 12 * C * C if s.fp32_matrices else 0
    head_lowp = 2 * Vp * C if s.fp32_matrices else 0
    blocks_lowp_saved = L * block_lowp - (2 * 3 * C * C if s.lora and s.fp32_matrices else 0)
    # The fp32 adapters' cached copies, saved by their matmuls but for the first block's c_attn lora_A: its input
    # needs no gradient.
    adapters_lowp = gradients // 2 - 2 * s.lora_rank * C if s.lora and s.autocast else 0
    lowp_through_forward = (blocks_lowp_saved if s.trained or not s.checkpointing else 0) + head_lowp + adapters_lowp
    # After it, those that matmuls saved: the head's is not, when the loss chunks are checkpointed.
    lowp_after_forward = (0 if s.checkpointing else blocks_lowp_saved + adapters_lowp) + (0 if chunk else head_lowp)

    ln_copies = s.bf16_stream and s.autocast
    per_block, first_block = (
        block_bytes(
            config,
            s.batch_size,
            s.seq_len,
            a,
            s.attention,
            lora_rank=s.lora_rank,
            lora_targets=s.lora_targets,
            first=first,
            ln_copies=ln_copies,
        )
        for first in (False, True)
    )
    embed = embedding_bytes(config, s.batch_size, s.seq_len, s.trained)
    # With checkpointing, only each block's input (the residual stream) is kept.
    saved_blocks = L * s.residual_bytes * C * n if s.checkpointing else (L - 1) * per_block + first_block
    head = head_bytes(config, n, a, trained=s.trained, chunked=bool(chunk), ln_copies=ln_copies)
    return StepTerms(
        step=s,
        weights=weights,
        gradients=gradients,
        optimizer=optimizer_bytes,
        ddp_buckets=ddp_buckets,
        root_gathered=root_gathered,
        block_gathered=block_gathered,
        ids=ids,
        static=weights + optimizer_bytes + ddp_buckets + root_gathered + grads_now + ids,
        block_lowp=block_lowp,
        head_lowp=head_lowp,
        adapters_lowp=adapters_lowp,
        lowp_through_forward=lowp_through_forward,
        lowp_after_forward=lowp_after_forward,
        per_block=per_block,
        embed=embed,
        saved_blocks=saved_blocks,
        head=head,
        acts=embed + saved_blocks + head,
        loss_saved=0 if chunk else loss_saved_bytes(config, n, a),
        logits=a * Vp * n if s.hold_logits and not chunk else 0,
        loss_gradient=0 if chunk else (4 * V * n if s.autocast else 8 * V * n),
        # The tied embedding's gradient from the LM head waits (in autograd's input buffer, beside any .grad)
        # until the embedding's own arrives at the very end of the backward pass.
        wte_grad=s.grad_bytes * Vp * C if s.trained else 0,
    )


def step_phases(t: StepTerms) -> dict[str, int]:
    """MemoryEstimate.phases: the bytes alive at each moment of the step that can be its peak."""
    s = t.step
    phases = chunked_loss_phases(t) if s.chunk else loss_phases(t)
    if s.trained:
        phases["backward (embedding)"] = embedding_backward_bytes(t)
    if not s.optimizer_in_backward:
        phases["optimizer step"] = optimizer_step_bytes(t)
    if s.checkpointing:
        phases["backward (recomputed block)"] = recomputed_block_bytes(t)
    elif s.shards > 1:
        phases["backward (last block)"] = last_block_backward_bytes(t)
    return phases


def last_block_backward_bytes(t: StepTerms) -> int:
    """Sharded: the last block's backward pass, with two blocks' worth of whole tensors beside the shards: the
    block's gathered weights and its gradients before they are reduce-scattered (the traced step holds no more
    at once: tests/test_memory.py). With a small vocabulary next to the blocks, this is the peak, not the loss."""
    s = t.step
    C, n, a = s.config.n_embd, s.tokens, s.act_bytes
    transient = (2 * s.residual_bytes * C + 2 * 4 * a * C) * n  # as in recomputed_block_bytes
    saved = t.embed + t.saved_blocks  # the head's saved tensors are used up by now
    return t.static + 2 * t.block_gathered + t.lowp_after_forward + saved + t.wte_grad + t.logits + transient


def loss_phases(t: StepTerms) -> dict[str, int]:
    """The whole loss at once: the end of the forward pass, the loss's gradient, and the LM head's backward."""
    s = t.step
    C, Vp, n, a = s.config.n_embd, s.config.padded_vocab_size, s.tokens, s.act_bytes
    phases: dict[str, int] = {}
    # The forward pass ends inside cross-entropy: the logits (the LM head's output, of which a padded
    # vocabulary's first V columns are a view), ln_f's fp32 output (which forward() holds in a
    # variable), and what the loss saved.
    forward_logits = a * Vp * n + (4 * C * n if s.autocast else 0)
    phases["forward (loss)"] = t.static + t.lowp_through_forward + t.acts + forward_logits
    # The backward pass starts with nll_loss's gradient, fp32 (n, V), beside what the loss saved. In fp32,
    # log_softmax's backward then makes a second fp32 (n, V) gradient while the first is alive; under
    # autocast the fp32 copy is freed first and the rest is 16-bit, so that moment is smaller.
    # (Sharded: the backward pass starts by gathering the last block's weights, block_gathered.)
    backward = t.static + t.block_gathered + t.lowp_after_forward + t.acts
    phases["backward (loss gradient)"] = backward + t.logits + t.loss_gradient
    # Then the LM head: the logits' gradient (padded width) and ln_f's, and the embedding's weight
    # gradient (bf16 under autocast, then an fp32 copy of it for fp32 weights).
    if s.trained:
        wgrad = max(a * Vp * n, (4 * Vp * C if s.fp32_matrices else 0)) + a * Vp * C
        after_loss = backward - t.loss_saved + t.logits
        phases["backward (LM head)"] = after_loss + a * C * n + wgrad
    return phases


def chunked_loss_phases(t: StepTerms) -> dict[str, int]:
    """The loss in chunks (GPT.chunked_loss): the largest chunk's forward pass, and its recompute in backward."""
    s = t.step
    C, V, Vp = s.config.n_embd, s.config.vocab_size, s.config.padded_vocab_size
    n, a, chunk, trained = s.tokens, s.act_bytes, s.chunk, s.trained
    # The largest chunk's loss in the forward pass: its LM-head input, logits, log-probabilities and
    # their fp32 copy. In backward each chunk is recomputed (with a new bf16 copy of fp32 weights) and
    # then its gradients formed: nll_loss's fp32 one; later the logits' and the chunk's share of the
    # embedding's weight gradient (bf16, summed over chunks), while ln_f's output gradient fills up.
    forward_chunk = (a * C + a * Vp + a * V + (4 * V if s.autocast else 0)) * chunk
    saved_chunk = (a * C if trained else 0) * chunk + t.head_lowp + loss_saved_bytes(s.config, chunk, a)
    nll_grad = (4 * V if s.autocast else 8 * V) * chunk
    head_grad = (a * C * chunk if trained else 0) + a * Vp * chunk + a * C * chunk + t.head_lowp
    head_grad += a * Vp * C if trained else 0
    summed = a * Vp * C if trained and n > chunk else 0
    ln_f_grad = 4 * C * (n - chunk)
    return {
        "forward (loss chunk)": t.static + t.lowp_through_forward + t.acts + forward_chunk,
        "backward (loss chunk)": (
            t.static
            + t.block_gathered
            + t.lowp_after_forward
            + t.acts
            + summed
            + ln_f_grad
            + max(saved_chunk + nll_grad, head_grad)
        ),
    }


def embedding_backward_bytes(t: StepTerms) -> int:
    """The end of the backward pass, where the token embedding's two gradients are summed."""
    s = t.step
    # The backward pass ends with the embeddings: the token embedding's own gradient joins the LM head's,
    # and autograd adds them into a third tensor, beside every other gradient formed by then.
    formed = 0 if s.optimizer_in_backward else t.gradients - (t.wte_grad if s.grad_accum == 1 else 0)
    return t.weights + t.optimizer + t.ddp_buckets + t.root_gathered + t.ids + t.logits + formed + 3 * t.wte_grad


def optimizer_step_bytes(t: StepTerms) -> int:
    """The optimizer step: every gradient, and the largest scratch of the update (torchao's 8-bit one)."""
    s = t.step
    update = update_transient_max(s.config, s.optimizer, s.lora_rank, s.lora_targets)
    return t.weights + t.gradients + t.optimizer + t.ddp_buckets + t.ids + t.logits + update


def recomputed_block_bytes(t: StepTerms) -> int:
    """With activation checkpointing, the backward pass of one recomputed block: the first or the last."""
    s = t.step
    C, L, Vp, n, a = s.config.n_embd, s.config.n_layer, s.config.padded_vocab_size, s.tokens, s.act_bytes
    # Block i recomputed, from the last block to the first: its activations (and bf16 copies of its fp32
    # weights), approximately the gradients flowing through it (two residual-stream gradients and two of
    # the 4C-wide MLP tensors), the inputs of blocks 0..i still saved, and the gradients formed so far:
    # all of them with accumulation, else the tied embedding's (waiting for the embedding's) and ln_f's
    # and those of blocks i+1 on; with the update in backward, only the embedding's. Both change
    # linearly with i, so the first or the last block is the worst.
    transient = (2 * s.residual_bytes * C + 2 * 4 * a * C) * n
    block_input = s.residual_bytes * C * n
    if s.grad_accum > 1 or not s.trained:
        held = L * block_input + t.wte_grad
    elif s.optimizer_in_backward:
        # A weight is updated once its gradient is complete, after the block's backward has used up the
        # tensors it needed: the update's scratch stands in for those transients, it does not add to them.
        held = L * block_input + t.wte_grad
        transient = max(transient, update_transient_max(s.config, s.optimizer))
    else:
        gb = s.grad_bytes
        ln_f = gb * (2 * C if s.config.bias else C)
        block_grads = (t.gradients - gb * (Vp * C + s.config.block_size * C) - ln_f) // L
        held = t.wte_grad + ln_f + max(L * block_input, block_input + (L - 1) * block_grads)
    if s.lora and s.grad_accum == 1:
        held += t.gradients
    # Sharded: this block's gathered weights and its whole gradients before they are reduce-scattered, and
    # the next block's weights gathered early (FSDP2's prefetch) for part of the time: the traced peaks lie
    # between two and three blocks' worth (tests/test_memory.py), and 2.5 stays within 3% of them.
    gathered = 5 * t.block_gathered // 2
    return (
        t.static + gathered + t.embed + held + t.logits + t.per_block + t.block_lowp + t.adapters_lowp // L + transient
    )
