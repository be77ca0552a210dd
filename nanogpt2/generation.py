"""Generating text: a prefill pass over the prompt, then one cached step per new token (GPT.generate_tokens).

    prompt ──prefill──> KVCache holds its keys/values ──> logits of the last position ──> token
                                     ^                                                     │
                                     └────── one position through the model per token <───┘

The model (nanogpt2/model.py) supplies the pieces: forward with a KVCache, and last_only for
logits of the last position only. This loop adds what generation needs around them: the
window (a GPT-2 sees at most block_size tokens), how a token is chosen (nanogpt2/sampling.py),
rows that stop at <|endoftext|>, and on the CPU the screened LM head
(nanogpt2/screened_head.py), which finds the top tokens while reading half the head's bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from nanogpt2.model import KVCache
from nanogpt2.sampling import check_generation, make_generator, next_token
from nanogpt2.screened_head import WORTH_IT_TOKENS, ScreenedHead, fp32_matmuls_are_fp32

if TYPE_CHECKING:
    from nanogpt2.model import GPT


@torch.no_grad()
def generate_tokens(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    seed: int | torch.Generator | None = None,
    eot_id: int | None = None,
    use_cache: bool = True,
    window_shift: int | None = None,
    screen: bool = True,
) -> Iterator[torch.Tensor]:
    """Continue each row of idx (B, P), yielding each new token (B,) as soon as it is chosen.

    temperature, top_k, top_p: how the token is chosen (nanogpt2/sampling.py; 0 = greedy).
    seed:         an int, or a torch.Generator to continue, makes the draws repeatable.
    eot_id:       a row that produces this id (GPT-2: 50256) has ended and yields it from
                  then on; generation stops when every row has ended.
    use_cache:    False recomputes the whole window for every token (the slow reference).
    window_shift: the model sees at most block_size tokens. A longer prompt is cut to its
                  last block_size; when the text outgrows the window, the window jumps
                  forward by window_shift tokens and the cache is rebuilt (every kept token
                  has a new position). 1 gives every token a full window, as a model without
                  a cache sees it, at the cost of a full forward pass per token; the default,
                  block_size // 8, keeps at least 7/8 of the window and rebuilds the cache
                  once every block_size // 8 tokens.
    screen:       on the CPU, when only the top tokens count (greedy, or top_k) and at least
                  WORTH_IT_TOKENS are asked for, find them with ScreenedHead: the plain head's
                  tokens for half its memory traffic. False scores every token in fp32 (as
                  use_cache=False always does).
    Dropout is off while generating, whatever the model's mode.
    """
    bs = model.config.block_size
    shift = check_generation(idx, max_new_tokens, temperature, top_k, top_p, window_shift, bs)
    generator = make_generator(seed, idx.device)
    weight = model.lm_head.weight[: model.config.vocab_size]  # (V, C)
    few = 1 if temperature == 0 else top_k  # how many top tokens decide the draw (None: all of them)
    # The screen where it was measured faster (the CPU, and texts long enough to repay building it), and where
    # the plain head's logits are fp32 products (not under autocast, nor with fp32 matmuls allowed to round).
    worth_it = use_cache and few is not None and max_new_tokens >= WORTH_IT_TOKENS
    on_cpu_fp32 = weight.device.type == "cpu" and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    screened = ScreenedHead(weight) if screen and worth_it and on_cpu_fp32 and fp32_matmuls_are_fp32() else None

    def scores(ids: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """(B, V) next-token logits after ids, through the cache if there is one."""
        out, _ = model(ids, cache=cache, last_only=True, head=screened is None)  # (B, 1, V) or (B, 1, C)
        assert out is not None
        if screened is None:
            return out[:, -1]
        assert few is not None  # screened only when few is set
        return screened.logits(out[:, -1], few)

    was_training = model.training
    model.eval()
    try:
        B, P = idx.shape
        seq = idx.new_empty(B, P + max_new_tokens)  # the whole text, filled in as tokens come
        seq[:, :P] = idx
        n = P  # tokens in seq so far
        start = max(0, n - bs)  # the model sees seq[:, start:n]
        cache = None
        done = torch.zeros(B, dtype=torch.bool, device=idx.device)
        for step in range(max_new_tokens):
            if n - start > bs:  # the newest token does not fit: move the window on
                start = n - bs - 1 + shift
                cache = None  # every kept token has a new position: its keys and values are stale
            if not use_cache:
                logits = scores(seq[:, start:n], None)
            elif cache is None:  # prefill: the whole window in one pass, filling a new cache
                cache = KVCache(model.config.n_layer, capacity=min(bs, n - start + max_new_tokens - 1 - step))
                logits = scores(seq[:, start:n], cache)
            else:  # the cache holds every token of the window but the newest one
                logits = scores(seq[:, n - 1 : n], cache)
            token = next_token(logits, temperature, top_k, top_p, generator)  # (B,)
            if eot_id is not None:
                token = token.masked_fill(done, eot_id)
                done |= token == eot_id
            seq[:, n] = token
            n += 1
            yield token
            if eot_id is not None and bool(done.all()):
                return
    finally:
        model.train(was_training)
