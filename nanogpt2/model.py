"""GPT-2, written out in full: causal self-attention -> MLP -> block -> GPT.

The network OpenAI released in 2019, weight for weight: their checkpoints load into it and give the
numbers `transformers` gives (tests/test_model.py). Its shape, GPTConfig, is in model_config.py.
Read it top to bottom; every shape is written next to the line that makes it.

    B  batch size              T  sequence length (<= block_size)
    C  embedding width n_embd  nh number of heads     hs head size = C // nh
    V  vocabulary size

Beside the architecture: a KVCache, so that generating a token costs one position's work;
packed examples (fine-tuning on pairs), each seeing only itself from position 0 as if alone;
and two memory savers for training that give the same numbers (activation checkpointing, the
loss in chunks). Faster paths for particular devices live in nanogpt2/fast/, applied to a built model.

References
    [GPT-2]  Radford et al. 2019, "Language Models are Unsupervised Multitask Learners".
    [GPT-1]  Radford et al. 2018, "Improving Language Understanding by Generative Pre-Training".
    [Attn]   Vaswani et al. 2017, "Attention Is All You Need".
    [GELU]   Hendrycks & Gimpel 2016, "Gaussian Error Linear Units".
    [Tying]  Press & Wolf 2017, "Using the Output Embedding to Improve Language Models".
    [Flash]  Dao et al. 2022, "FlashAttention".
    [Ckpt]   Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost".
    [KV]     Pope et al. 2022, "Efficiently Scaling Transformer Inference" (the KV cache and its costs).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from nanogpt2.model_config import GPTConfig  # the shape: sizes, widths, vocabulary (torch-free, read it first)

# ---------------------------------------------------------------------------
# Causal self-attention
# ---------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Multi-head attention in which position t may only look at positions <= t ([Attn] 3.2)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        # One matmul makes queries, keys and values for all heads at once: C -> 3C.
        # (GPT-2 calls these layers c_attn/c_proj; keeping its names keeps weight loading obvious.)
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # Output projection: mixes the heads back into the residual stream.
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout  # on the attention weights, inside the fused kernel
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        # Queries, keys and values side by side, viewed (not copied) as 3 stacks of heads with the
        # head axis in front of time, so that each head attends independently.
        qkv = self.c_attn(x).view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        if cache is None:
            q, k, v = qkv.unbind(0)  # 3 x (B, nh, T, hs)
            y = self.attend(q, k, v, mask)  # (B, nh, T, hs)
        else:
            y = self.attend_cached(qkv, cache, layer)  # (B, nh, T, hs)
        # Heads side by side again. PyTorch's CPU and CUDA flash kernels write y as (B, T, nh, hs) in
        # memory, so this is usually a view; reshape copies only when it must.
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """A whole sequence: softmax(q k^T / sqrt(hs) + causal mask) v, each (B, nh, T, hs). mask (B, 1, T, T)
        bool, if given, is the causal mask of packed examples (GPT.example_mask): keys of its own example only.

        PyTorch's fused kernel (FlashAttention [Flash] on GPUs) never stores the (T, T) scores."""
        p = self.dropout if self.training else 0.0
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)

    def attend_cached(self, qkv: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
        """Generating: these T queries continue the L - T positions the cache holds. qkv (3, B, nh, T, hs)."""
        q = qkv[0]
        k, v = cache.update(layer, qkv[1:])  # 2 x (B, nh, L, hs): the stored positions and these
        T, L = q.size(2), k.size(2)
        if T == 1 or L == T:  # one query sees every key; an empty cache's prefill is plain causal
            return F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        # Query i sits at position L - T + i, so it may see keys 0 .. L - T + i: a lower triangle
        # aligned to the bottom-right corner of the (T, L) scores. (SDPA's is_causal aligns it
        # top-left, which is right only when L == T.)
        mask = torch.ones(T, L, dtype=torch.bool, device=q.device).tril(L - T)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class KVCache:
    """The keys and values every layer has computed so far, kept while generating text [KV].

    Without it, each new token means running the whole sequence through the model again. With
    it, the prompt goes through once (the "prefill") and each new token costs one position's
    work, attending to the stored keys and values. Position t's keys and values depend only on
    tokens <= t (causality), so storing them changes no result.

    Each layer's keys and values share one buffer, allocated once at full capacity: a new
    position is one copy into place. Attention reads only the filled part, so under torch.compile
    the length is a dynamic shape and one graph serves every length (tests/test_compile.py).
    """

    def __init__(self, n_layer: int, capacity: int):
        self.capacity = capacity  # most positions it can hold (<= block_size)
        self.length = 0  # positions stored so far; GPT.forward advances it
        self.kv: list[torch.Tensor | None] = [None] * n_layer  # per layer: (2, B, nh, capacity, hs)

    def update(self, layer: int, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' keys and values kv (2, B, nh, T, hs); return all keys and all
        values so far, each (B, nh, length + T, hs)."""
        _, B, nh, T, hs = kv.shape
        buffer = self.kv[layer]
        if buffer is None:  # allocated on first use, in whatever dtype autocast produced
            buffer = self.kv[layer] = kv.new_empty(2, B, nh, self.capacity, hs)
        end = self.length + T
        buffer[:, :, :, self.length : end] = kv
        keys, values = buffer[:, :, :, :end].unbind(0)
        return keys, values


# ---------------------------------------------------------------------------
# Feed-forward network and the transformer block
# ---------------------------------------------------------------------------


class MLP(nn.Module):
    """Position-wise feed-forward network: widen 4x, GELU, project back ([Attn] 3.3)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # GPT-2 used the tanh approximation of GELU [GELU]; the exact erf form would
        # change every logit slightly and break equality with OpenAI's checkpoints.
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.c_fc(x))  # (B, T, 4C)
        return self.dropout(self.c_proj(x))  # (B, T, C)


class Block(nn.Module):
    """One transformer block, pre-LayerNorm as in GPT-2 ([GPT-2] 2.3).

    GPT-1 normalised after each residual addition; GPT-2 moved LayerNorm to the
    input of each sub-block, so the residual stream x is a clean sum of every
    layer's output. That makes deep stacks much easier to train.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer, mask)  # (B, T, C): tokens exchange information
        x = x + self.mlp(self.ln_2(x))  # (B, T, C): each token is processed on its own
        return x


# ---------------------------------------------------------------------------
# The whole model
# ---------------------------------------------------------------------------


class GPT(nn.Module):
    """Token + position embeddings -> n_layer blocks -> final LayerNorm -> LM head."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        V, C = config.padded_vocab_size, config.n_embd
        self.wte = nn.Embedding(V, C)  # token embedding: id -> vector
        self.wpe = nn.Embedding(config.block_size, C)  # learned position embedding [GPT-1]
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(C, eps=1e-5, bias=config.bias)  # added by GPT-2 after the last block
        self.lm_head = nn.Linear(C, V, bias=False)  # vector -> a score for every token
        # Weight tying [Tying]: the output layer reuses the input embedding, as GPT-2 does.
        # It saves V*C parameters (38.6M in GPT-2 small) and trains as well or better.
        self.lm_head.weight = self.wte.weight
        # Memory savers for training, off by default; each gives the same loss and gradients.
        self.checkpointing = False  # recompute each block in backward (hidden_states)
        self.loss_chunk_tokens = 0  # the LM head and loss this many positions at a time (chunked_loss)

        self.apply(self._init_weights)
        # GPT-2 scales the init of each layer that writes into the residual stream by 1/sqrt(N),
        # N = 2 per block, so that the stream's variance does not grow with depth ([GPT-2] 2.3).
        for block in self.h:
            assert isinstance(block, Block)
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # Normal(0, 0.02) for every weight matrix and embedding, zero biases ([GPT-1] 4.1).
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
        examples: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits for the next token at every position, and the loss if targets are given.

        idx (B, T) token ids, T <= block_size; targets (B, T): the id that should follow each position,
        -1 where ignored. cache (generation): idx continues the text the cache holds, and is added to it.
        last_only: logits for the last position only, (B, 1, V), all that generation needs.
        examples (B, T): for packed examples, which one each position belongs to (nondecreasing in t):
        each example then sees only itself, from position 0, as it would alone.
        Returns logits (B, T, vocab_size), None when training with loss_chunk_tokens, and the loss or None.
        """
        x = self.hidden_states(idx, cache, examples)  # (B, T, C)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        return self.logits_and_loss(x, targets)

    def hidden_states(
        self, idx: torch.Tensor, cache: KVCache | None = None, examples: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The final LayerNorm's output at every position of idx (B, T): (B, T, C)."""
        B, T = idx.shape
        start = 0 if cache is None else cache.length  # position of idx[:, 0]
        limit = self.config.block_size if cache is None else cache.capacity
        if start + T > limit:
            raise ValueError(f"positions {start}..{start + T - 1} do not fit in {limit} (block_size or cache size)")
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        mask = None
        if examples is not None:  # packed examples: positions restart at each, attention stays inside it
            if cache is not None:
                raise ValueError("packed examples are for training and scoring whole windows, not a KV cache")
            first = torch.ones_like(examples, dtype=torch.bool)  # (B, T): an example starts here
            first[:, 1:] = examples[:, 1:] != examples[:, :-1]
            start_of_mine = torch.cummax(torch.where(first, pos, 0), dim=1).values  # (B, T)
            pos = pos - start_of_mine  # (B, T): 0 at each example's first token
            mask = self.example_mask(examples)

        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C): what the token is + where it is
        for i, block in enumerate(self.h):
            if self.checkpointing and self.training and cache is None:
                # Activation checkpointing [Ckpt]: keep only the block's input and recompute its
                # activations during backward, trading a second forward pass for their memory.
                # The random state is replayed, so dropout draws the same masks both times.
                x = torch.utils.checkpoint.checkpoint(block, x, None, i, mask, use_reentrant=False)
            else:
                x = block(x, cache, i, mask)  # (B, T, C)
        if cache is not None:
            cache.length += T
        return self.ln_f(x)  # (B, T, C)

    @staticmethod
    def example_mask(examples: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, T) bool: query t may see key s <= t of its own example (a block-diagonal causal mask)."""
        T = examples.size(1)
        causal = torch.ones(T, T, dtype=torch.bool, device=examples.device).tril()  # (T, T)
        return (examples[:, :, None] == examples[:, None, :])[:, None] & causal  # (B, 1, T, T)

    def logits_and_loss(
        self, x: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The LM head on hidden states x (B, T, C): logits (B, T, V), and the mean loss against targets."""
        if targets is not None and self.loss_chunk_tokens and torch.is_grad_enabled():
            return None, self.chunked_loss(x, targets)  # never all the logits at once
        logits = self.lm_head(x)  # (B, T, padded V): a score for every token id
        if self.config.padded_vocab_size != self.config.vocab_size:
            # Keep only the real ids, so that padding rows can never be predicted, counted in
            # the loss, or sampled. (Only when padded: even a no-op slice costs a copy in backward.)
            logits = logits[..., : self.config.vocab_size]  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=-1)
        return logits, loss

    def chunked_loss(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean cross-entropy of logits_and_loss, without ever holding all (B*T, V) logits: the largest
        tensors of a GPT-2 step, which cross-entropy's backward holds in several copies. The rows go through
        the head and the loss loss_chunk_tokens at a time, each chunk checkpointed [Ckpt], so that one chunk's
        logits exist at a time; the cost is the head's forward matmul run twice. (torch 2.13's chunked
        F.linear_cross_entropy is leaner on the CPU, but bypasses autocast and compile: bench/README.md.)"""
        x, targets = x.flatten(0, -2), targets.flatten()  # (N, C), (N,)
        total = x.new_zeros((), dtype=torch.float32)
        for xs, ts in zip(x.split(self.loss_chunk_tokens), targets.split(self.loss_chunk_tokens)):
            total = total + torch.utils.checkpoint.checkpoint(self._loss_sum, xs, ts, use_reentrant=False)
        return total / (targets != -1).sum()  # the mean over the positions not ignored, as in logits_and_loss

    def _loss_sum(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(x)[:, : self.config.vocab_size]  # (n, V): padding rows never count
        return F.cross_entropy(logits, targets, ignore_index=-1, reduction="sum")

    # -- generation: the loop itself is in nanogpt2/generate/loop.py -----------------

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, **options) -> torch.Tensor:
        """idx (B, P) followed by max_new_tokens generated tokens: (B, P + new). Options: generate_tokens."""
        new = [token[:, None] for token in self.generate_tokens(idx, max_new_tokens, **options)]  # each (B, 1)
        return torch.cat([idx, *new], dim=1)

    def generate_tokens(self, idx: torch.Tensor, max_new_tokens: int, **options) -> Iterator[torch.Tensor]:
        """Continue each row of idx (B, P), yielding each new token (B,) as soon as it is chosen. Options
        (temperature, top_k, top_p, seed, eot_id, ...): nanogpt2/generate/loop.py's generate_tokens."""
        from nanogpt2.generate.loop import generate_tokens  # that module uses this one's KVCache

        return generate_tokens(self, idx, max_new_tokens, **options)

    # -- bookkeeping --------------------------------------------------------------

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters (tied weights counted once). non_embedding=True leaves out the token and
        position tables, the count Kaplan et al. 2020 use for scaling laws ("N")."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel() + self.wpe.weight.numel()
        return n

    @classmethod
    def from_state_dict(cls, config: GPTConfig, state: dict[str, torch.Tensor]) -> GPT:
        """A GPT holding exactly these tensors. It is built on the meta device (no memory, no
        random init), then adopts them; loading copies nothing and a mismatch raises."""
        with torch.device("meta"):
            model = cls(config)
        model.load_state_dict(state, strict=True, assign=True)
        model.lm_head.weight = model.wte.weight  # assign=True gave the head its own Parameter: tie again
        return model

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike, **overrides) -> GPT:
        """OpenAI's GPT-2 ("gpt2" ... "gpt2-xl") or a local Hugging Face directory (nanogpt2/hf/pretrained.py).
        Only `dropout` may be overridden, and `block_size` cropped."""
        from nanogpt2.hf.pretrained import load_pretrained

        return load_pretrained(name_or_dir, **overrides)
