"""What autograd saves for the backward pass of GPT-2 (nanogpt2/model.py), tensor by tensor.

Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", 4.1) count
activation memory by listing each tensor a layer saves. Here the list is of what PyTorch saves when
CUDA autocast runs nanogpt2/model.py, per token, per block, with C = n_embd, a = bytes per
activation (2 under bf16/fp16 autocast, 4 in fp32):

    2 x 4C   the inputs of ln_1 and ln_2, fp32: LayerNorm is on CUDA autocast's fp32 list, so with a
             bf16 residual stream (bf16 parameters) it saves an fp32 copy of the same size
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

A matmul saves its input only to form its weight's gradient, so under LoRA, whose base weights are
frozen, the frozen matmuls save nothing: the MLP's of "attn" targets keep only GELU's input (4aC), and
the first block, whose input (the frozen embeddings) needs no gradient, keeps no ln_1 input. Each
adapter saves its own input (lora_A; the attention output is cast to fp32 and back by LoRALinear, a
new aC) and the rank-r intermediate (lora_B's input, ra).
"""

from __future__ import annotations

from nanogpt2.errors import UserError
from nanogpt2.flops.memory_state import lora_widths
from nanogpt2.model_config import GPTConfig


def block_bytes(
    config: GPTConfig,
    batch_size: int,
    seq_len: int,
    act_bytes: int,
    attention: str = "flash",
    *,
    lora_rank: int = 0,
    lora_targets: str = "attn",
    first: bool = False,
    ln_copies: bool = False,
) -> int:
    """Bytes one transformer block saves for the backward pass over a micro-batch (see the module docstring).

    lora_rank/lora_targets: adapters on a frozen base; first: the first block (under LoRA its input needs no
    gradient); ln_copies: the LayerNorm weights are bf16 and autocast saves fp32 copies of them."""
    C, nh, a, T = config.n_embd, config.n_head, act_bytes, seq_len
    targets = lora_widths(lora_targets) if lora_rank else {}
    if lora_rank and "attn.c_attn" not in targets:
        # Without an adapter on c_attn, how much of the first block runs without autograd, and whether a frozen
        # c_attn's input is kept, differ from what this count assumes; it is checked only for sets with c_attn.
        raise UserError(
            f"lora_targets={lora_targets!r}: the memory model counts LoRA's saved activations for target sets "
            f"with attn.c_attn (attn, all, c_attn, or a list with it); add attn.c_attn to estimate this run"
        )
    input_free = bool(lora_rank) and first  # LoRA's first block: nothing before it needs a gradient
    b = (4 * C + 2 * 4) * (1 if input_free else 2)  # per token: ln inputs (fp32) and their statistics
    b += a * C  # ln_1's output cast for c_attn (or, under LoRA, for its lora_A)
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
    if "attn.c_proj" in targets and a < 4:
        b += a * C  # LoRALinear casts the attention output to fp32 and autocast back: a copy for lora_A
    b += a * C if not lora_rank or "mlp.c_fc" in targets else 0  # ln_2's output cast for c_fc
    b += 4 * a * C  # GELU's input
    b += 4 * a * C if not lora_rank or "mlp.c_proj" in targets else 0  # its output (or lora_A's copy of it)
    b += lora_rank * a * len(targets)  # each adapter's rank-r intermediate, lora_B's input
    if config.dropout > 0:
        b += 2 * C  # the two residual dropout masks (bool)
    copies = (4 * C * (2 if config.bias else 1)) * (1 if input_free else 2) if ln_copies else 0
    return b * batch_size * T + lse * batch_size + rng + copies


def embedding_bytes(config: GPTConfig, batch_size: int, seq_len: int, trained: bool) -> int:
    """Saved by the embeddings: the position ids (wpe's input; the token ids are the batch's) and the dropout
    mask. A frozen embedding (LoRA) needs no gradient: nothing."""
    if not trained:
        return 0
    return 8 * seq_len + (batch_size * seq_len * config.n_embd if config.dropout > 0 else 0)


def head_bytes(config: GPTConfig, tokens: int, act_bytes: int, *, trained: bool, chunked: bool, ln_copies: bool) -> int:
    """Saved by ln_f, the LM head and the loss (the targets are the batch's).

    ln_f saves its fp32 input and statistics. The LM head saves its input for the tied embedding's gradient
    (not when frozen). cross_entropy runs log_softmax in the logits' dtype (it passes that dtype explicitly,
    and CUDA autocast keeps an explicit dtype) and saves its output; under autocast nll_loss (on CUDA
    autocast's fp32 list) makes an fp32 copy of those log-probabilities and saves it, and its scalar total
    weight. With a chunked loss, each chunk is checkpointed: only ln_f's output is kept, for the recompute."""
    C, a, n = config.n_embd, act_bytes, tokens
    ln_f = (4 * C + 8) * n + (4 * C * (2 if config.bias else 1) if ln_copies else 0)
    if chunked:  # and the mean's divisor, the count of targets (int64)
        return ln_f + 4 * C * n + 8
    return ln_f + (a * C * n if trained else 0) + loss_saved_bytes(config, n, a)


def loss_saved_bytes(config: GPTConfig, tokens: int, act_bytes: int) -> int:
    """The log-probabilities cross_entropy saves, with nll_loss's fp32 copy under autocast, and its total weight."""
    V = config.vocab_size
    return (act_bytes * V + (4 * V if act_bytes < 4 else 0)) * tokens + 4
