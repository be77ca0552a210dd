"""How much arithmetic training takes: parameters, FLOPs per token, MFU, and the CLI.

Two ways to count the FLOPs of one trained token, both shown because both are used:

* **6N** (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", 2.1): a
  forward pass costs about 2 FLOPs per parameter (one multiply, one add), the
  backward pass twice that, and N counts the non-embedding parameters. It leaves
  out the attention scores (which have no parameters) and, with N non-embedding,
  the LM head, which for GPT-2 small at T=1024 is over a quarter of the work (27%).
* **The exact matmul count** (Chowdhery et al. 2022, "PaLM", App. B): every matrix
  multiplication of the forward pass, 2*m*n*k FLOPs for an (m x k) @ (k x n)
  product, times 3 for forward + backward (the backward multiplies each layer's
  output gradient by its weights and by its inputs: two matmuls the size of the
  forward one). Per token of a length-T sequence, GPT-2 does

      QKV projection        2 * C * 3C           per layer
      attention scores      2 * T * C            q . k for T keys, all heads together
      weighted values       2 * T * C            softmax(scores) @ v
      output projection     2 * C * C
      MLP                   2 * C * 4C * 2       widen 4x, then back
      LM head               2 * C * V            once, V = padded vocabulary rows

  so 3 * (24 L C^2 + 4 L T C + 2 C V) in all: PaLM's 6N + 12 L T C, with N the
  matmul weights (the tied LM head in; biases, LayerNorms and the position table
  out, as they do no matmul). Like PaLM we count the full T x T
  score matrix even though causal attention could skip half of it, and leave out
  elementwise work (LayerNorm, GELU, softmax, residual adds): MFU counts the model's
  matmuls, not whatever a kernel happens to execute. tests/test_flops.py checks this
  count against torch.utils.flop_counter on the model itself.

MFU (model FLOPs utilization) = achieved model FLOP/s / the GPU's dense peak; see
nanogpt2/flops/hardware.py for which peak. Activation checkpointing recomputes the
forward pass (8 instead of 6 FLOPs per parameter) but MFU, by definition, does not
count the recomputation.

The command line (`nanogpt2-flops`, `python -m nanogpt2.flops`) is in
nanogpt2/flops/cli.py; the memory model in nanogpt2/flops/memory.py; scaling laws in
nanogpt2/flops/scaling.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nanogpt2.errors import UserError, check_positive_int
from nanogpt2.model_config import BLOCK_LINEARS, GPTConfig, lora_layers


@dataclass(frozen=True)
class ParamCount:
    """Parameters of a GPT-2 model, tied LM head counted once."""

    total: int
    token_embedding: int  # wte, padded_vocab_size x n_embd (also the LM head)
    position_embedding: int  # wpe, block_size x n_embd

    @property
    def non_embedding(self) -> int:
        """Kaplan et al.'s N: everything but the two embedding tables."""
        return self.total - self.token_embedding - self.position_embedding


def count_params(config: GPTConfig) -> ParamCount:
    """Parameter counts from the shape alone, exactly as nanogpt2/model.py builds the model."""
    C, L = config.n_embd, config.n_layer
    ln = 2 * C if config.bias else C  # LayerNorm gain (+ bias)
    per_block = (
        2 * ln  # ln_1, ln_2
        + 3 * C * C
        + (3 * C if config.bias else 0)  # c_attn
        + C * C
        + (C if config.bias else 0)  # attention c_proj
        + 4 * C * C
        + (4 * C if config.bias else 0)  # c_fc
        + 4 * C * C
        + (C if config.bias else 0)  # MLP c_proj
    )
    wte = config.padded_vocab_size * C
    wpe = config.block_size * C
    return ParamCount(total=wte + wpe + L * per_block + ln, token_embedding=wte, position_embedding=wpe)


def _check_seq_len(config: GPTConfig, seq_len: int) -> None:
    check_positive_int("sequence length", seq_len)
    if seq_len > config.block_size:
        raise UserError(f"sequence length {seq_len} is longer than the model's block_size {config.block_size}")


def forward_matmul_flops(config: GPTConfig, seq_len: int) -> dict[str, int]:
    """FLOPs of each kind of matmul in one forward pass over one sequence of seq_len tokens, all layers."""
    _check_seq_len(config, seq_len)
    T, C, L = seq_len, config.n_embd, config.n_layer
    return {
        "qkv": L * 2 * T * C * 3 * C,
        "attention_scores": L * 2 * T * T * C,  # (T, hs) @ (hs, T) per head, nh * hs = C
        "attention_values": L * 2 * T * T * C,  # (T, T) @ (T, hs) per head
        "attention_proj": L * 2 * T * C * C,
        "mlp": L * 2 * T * C * 4 * C * 2,
        "lm_head": 2 * T * C * config.padded_vocab_size,  # all padded rows are computed, then sliced
    }


def training_flops_per_token(config: GPTConfig, seq_len: int) -> int:
    """Exact forward + backward matmul FLOPs per trained token, for sequences of seq_len tokens."""
    return 3 * sum(forward_matmul_flops(config, seq_len).values()) // seq_len


def lora_matrices(targets: str) -> list[tuple[int, int]]:
    """The (inputs, outputs) in units of n_embd of each block matrix LoRA adapts for `targets` (lora_layers)."""
    return [BLOCK_LINEARS[path] for path in lora_layers(targets)]


def lora_training_flops_per_token(config: GPTConfig, seq_len: int, rank: int, targets: str = "attn") -> int:
    """Exact matmul FLOPs per trained token of a LoRA run (frozen base, rank-`rank` adapters on `targets`).

    A frozen weight gets no gradient, so its backward pass does one matmul (the input's gradient), not
    two: 2x its forward FLOPs instead of 3x. The attention scores and values have no weights and keep
    3x. Each adapter (x @ A^T @ B^T, A: r x in, B: out x r) costs 3x its forward, like any trained layer.
    Where no gradient flows into a matmul's input, autograd skips that one too: in the first block,
    everything before its first adapted layer reads only frozen inputs (the embeddings), so it runs
    forward only, and that layer (and its A) computes no input gradient."""
    check_positive_int("rank", rank)
    T, C, L = seq_len, config.n_embd, config.n_layer
    adapted = lora_layers(targets)
    block = [  # a block's matmuls in the order they run: (layer, forward FLOPs); None: attention, no weights
        ("attn.c_attn", 2 * T * C * 3 * C),
        (None, 2 * T * T * C),  # scores
        (None, 2 * T * T * C),  # values
        ("attn.c_proj", 2 * T * C * C),
        ("mlp.c_fc", 2 * T * C * 4 * C),
        ("mlp.c_proj", 2 * T * 4 * C * C),
    ]

    def block_flops(first: bool) -> int:
        total, flows = 0, not first  # flows: a gradient is wanted for this matmul's input
        for layer, forward in block:
            if layer in adapted:
                n_in, n_out = BLOCK_LINEARS[layer]
                a, b = 2 * T * n_in * C * rank, 2 * T * rank * n_out * C
                total += (2 if flows else 1) * forward + (3 if flows else 2) * a + 3 * b
                flows = True
            else:
                total += ((3 if layer is None else 2) if flows else 1) * forward
        return total

    head = 2 * T * C * config.padded_vocab_size  # frozen (tied to wte): forward and the input's gradient
    return (block_flops(first=True) + (L - 1) * block_flops(first=False) + 2 * head) // seq_len


# The block matrices optimizer=muon orthogonalizes (nanogpt2/train/muon.py): all four, as (outputs, inputs).
MUON_MATRICES = [(o, i) for i, o in BLOCK_LINEARS.values()]


def newton_schulz_flops(rows: int, cols: int, steps: int = 5) -> int:
    """Matmul FLOPs of Muon's Newton-Schulz iterations on one rows x cols matrix. It works on the wide side,
    X (A x B, A <= B); each iteration is G = X X^T (2 A^2 B), H = b G + c G G (2 A^3), X = a X + H X
    (2 A^2 B): steps (4 A^2 B + 2 A^3) (torch.optim.Muon, after Jordan et al. 2024)."""
    a, b = sorted((rows, cols))
    return steps * (4 * a * a * b + 2 * a**3)


def muon_flops_per_step(config: GPTConfig, steps: int = 5) -> int:
    """Newton-Schulz FLOPs of one optimizer=muon step: every block matrix once, whatever the batch (the update is
    computed once per optimizer step, on every process alike). Not part of MFU, which counts the model's FLOPs."""
    C = config.n_embd
    return config.n_layer * sum(newton_schulz_flops(o * C, i * C, steps) for o, i in MUON_MATRICES)


def kaplan_flops_per_token(config: GPTConfig) -> int:
    """6N, N = non-embedding parameters (Kaplan et al. 2020, Table 1's C_forward ~ 2N, times 3)."""
    return 6 * count_params(config).non_embedding


def training_flops(config: GPTConfig, seq_len: int, tokens: float) -> float:
    """Exact FLOPs to train on `tokens` tokens in sequences of seq_len."""
    if not tokens > 0:
        raise UserError(f"the token count must be positive, got {tokens!r}")
    return training_flops_per_token(config, seq_len) * tokens


def mfu(flops_per_token: float, tokens_per_second: float, peak_flops: float) -> float:
    """Model FLOPs utilization: the fraction of peak_flops that tokens_per_second achieves.

    All three per GPU (under data parallelism divide the total tokens/s by the GPU count).
    E.g. 854.7 MFLOP/token x 218K tokens/s on an A100 (312 TFLOP/s) -> 0.60."""
    for name, value in (
        ("flops_per_token", flops_per_token),
        ("tokens_per_second", tokens_per_second),
        ("peak_flops", peak_flops),
    ):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise UserError(f"mfu: {name} must be a finite non-negative number, got {value!r}")
    if peak_flops == 0:
        raise UserError("mfu: peak_flops must be positive")
    return flops_per_token * tokens_per_second / peak_flops


def tokens_per_second(flops_per_token: float, peak_flops: float, utilization: float) -> float:
    """The throughput a GPU of peak_flops reaches at a given MFU (the inverse of mfu())."""
    if not 0 < utilization <= 1:
        raise UserError(f"MFU must be in (0, 1], got {utilization!r} (e.g. 0.4 for 40%)")
    return utilization * peak_flops / flops_per_token
