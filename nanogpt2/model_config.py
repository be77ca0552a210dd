"""The shape of a GPT-2 model (GPTConfig) and OpenAI's four sizes: the one home of both.

It needs no PyTorch, so that the compute calculator (`python -m nanogpt2.flops`)
and data preparation can describe models without paying for `import torch`.
model.py builds the network from a GPTConfig.
"""

from __future__ import annotations

from dataclasses import dataclass

from nanogpt2.errors import UserError, check_positive_int

# OpenAI's released GPT-2 models: name -> (n_layer, n_head, n_embd), from Radford et al. 2019,
# "Language Models are Unsupervised Multitask Learners", Table 2 (head counts from the released
# hparams.json files). Every other module that needs the names or shapes reads them here.
GPT2_SIZES: dict[str, tuple[int, int, int]] = {
    "gpt2": (12, 12, 768),  # 124M parameters
    "gpt2-medium": (24, 16, 1024),  # 355M
    "gpt2-large": (36, 20, 1280),  # 774M
    "gpt2-xl": (48, 25, 1600),  # 1558M
}


@dataclass
class GPTConfig:
    """The shape of a GPT-2 model. The defaults are GPT-2 small (124M parameters)."""

    block_size: int = 1024
    """Longest sequence the model can read; the number of learned positions (GPT-2: 1024)."""

    vocab_size: int = 50257
    """Number of real token ids (GPT-2's BPE: 50,000 merges + 256 bytes + <|endoftext|>)."""

    n_layer: int = 12
    """Number of transformer blocks stacked on top of each other."""

    n_head: int = 12
    """Number of attention heads per block; must divide n_embd."""

    n_embd: int = 768
    """Width of the residual stream (the embedding size C)."""

    dropout: float = 0.0
    """Dropout probability on embeddings, attention weights and residual branches.
    GPT-2 was pretrained with 0.1; 0.0 is usual for large-data pretraining, 0.1-0.2 for small fine-tunes."""

    bias: bool = True
    """Biases in Linear and LayerNorm layers, as in GPT-2. False is slightly faster and
    works as well for scratch training, but cannot load OpenAI's weights."""

    pad_vocab_multiple: int = 1
    """Round the embedding table and LM head up to a multiple of this many rows
    (64 turns 50257 into 50304), which gives the big output matmul GPU-friendly shapes.
    Padded rows are never predicted or sampled: the model only returns the first
    vocab_size logits. 1 means no padding (needed to match OpenAI's checkpoints)."""

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "pad_vocab_multiple"):
            check_positive_int(f"GPTConfig.{name}", getattr(self, name))
        if self.n_embd % self.n_head != 0:
            raise UserError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"try n_head in {[h for h in range(1, 33) if self.n_embd % h == 0]}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def padded_vocab_size(self) -> int:
        """Rows in the embedding table and LM head (vocab_size rounded up to pad_vocab_multiple)."""
        m = self.pad_vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    @classmethod
    def gpt2(cls, name: str = "gpt2", **overrides) -> GPTConfig:
        """The shape of one of OpenAI's four GPT-2 models (GPT2_SIZES), plus overrides."""
        if name not in GPT2_SIZES:
            raise UserError(f"unknown GPT-2 size {name!r}; expected one of {', '.join(GPT2_SIZES)}")
        n_layer, n_head, n_embd = GPT2_SIZES[name]
        return cls(**{"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, **overrides})


# The Linear layers of every block (model.py's Block), with their (inputs, outputs) in units of n_embd:
# the matrices LoRA can adapt and Muon orthogonalizes. The calculator counts their FLOPs and bytes from here.
BLOCK_LINEARS: dict[str, tuple[int, int]] = {
    "attn.c_attn": (1, 3),  # x -> q, k, v
    "attn.c_proj": (1, 1),  # heads -> residual
    "mlp.c_fc": (1, 4),  # residual -> 4C
    "mlp.c_proj": (4, 1),  # 4C -> residual
}
# LoRA's named target sets: attn, the paper's choice (Hu et al. 2021, sections 4.2 and 7.1); all four; and
# c_attn alone, what PEFT adapts in GPT-2 by default.
LORA_TARGET_SETS: dict[str, tuple[str, ...]] = {
    "attn": ("attn.c_attn", "attn.c_proj"),
    "all": tuple(BLOCK_LINEARS),
    "c_attn": ("attn.c_attn",),
}


def lora_layers(targets: str) -> tuple[str, ...]:
    """The block layers LoRA adapts for `targets`: a set's name (attn, all, c_attn) or layers joined by commas
    (attn.c_attn,mlp.c_proj), in the block's order."""
    if targets in LORA_TARGET_SETS:
        return LORA_TARGET_SETS[targets]
    chosen = [t.strip() for t in str(targets).split(",")]
    unknown = [t for t in chosen if t not in BLOCK_LINEARS]
    if unknown or not targets:
        raise UserError(
            f"lora_targets={targets!r}: give {', '.join(LORA_TARGET_SETS)}, or layers joined by commas "
            f"from {', '.join(BLOCK_LINEARS)} (e.g. attn.c_attn,mlp.c_proj)"
        )
    return tuple(path for path in BLOCK_LINEARS if path in chosen)
