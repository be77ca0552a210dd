"""Generating text: a prefill pass over the prompt, then one cached step per new token (GPT.generate_tokens).

    prompt ──prefill──> KVCache holds its keys/values ──> logits of the last position ──> token
                                     ^                                                     │
                                     └────── one position through the model per token <───┘

The model (nanogpt2/model.py) supplies the pieces: forward with a KVCache, and last_only for
logits of the last position only. This loop adds what generation needs around them: the
window (a GPT-2 sees at most block_size tokens), how a token is chosen (sampling.py), and rows
that stop at <|endoftext|>. Where it pays, the LM head is nanogpt2/fast's screened head, which
finds the top tokens while reading half the head's bytes (fast/screened_head.py decides).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from nanogpt2.fast.screened_head import screened_head_for
from nanogpt2.generate.sampling import check_generation, make_generator, next_token
from nanogpt2.model import KVCache

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
    screen: bool | None = None,
) -> Iterator[torch.Tensor]:
    """Continue each row of idx (B, P), yielding each new token (B,) as soon as it is chosen.

    temperature, top_k, top_p: how the token is chosen (sampling.py; temperature 0 = greedy).
    seed:         an int, or a torch.Generator to continue, makes the draws repeatable.
    eot_id:       a row that produces this id (GPT-2: 50256) has ended and yields it from
                  then on; generation stops when every row has ended.
    use_cache:    False recomputes the whole window for every token (the slow reference).
    window_shift: the model sees at most block_size tokens. A longer prompt is cut to its last
                  block_size; when the text outgrows the window, the window jumps forward by
                  window_shift tokens and the cache is rebuilt (every kept token has a new
                  position). 1 gives every token a full window, at a full forward pass per token;
                  the default, block_size // 8, rebuilds the cache once every block_size // 8 tokens.
    screen:       the screened LM head for greedy and top-k (fast/screened_head.py): None where it
                  pays, True wherever it is exact, False never (every token scored in the plain head).
    Dropout is off while generating, whatever the model's mode.
    """
    bs = model.config.block_size
    shift = check_generation(idx, max_new_tokens, temperature, top_k, top_p, window_shift, bs)
    generator = make_generator(seed, idx.device)
    few = 1 if temperature == 0 else top_k  # how many top tokens decide the draw (None: all of them)
    head = screened_head_for(model, few, max_new_tokens, screen) if use_cache else None

    def scores(ids: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """(B, V) next-token logits after ids, through the cache if there is one."""
        if head is not None:
            return head.logits(model.hidden_states(ids, cache)[:, -1], few or 1)
        logits, _ = model(ids, cache=cache, last_only=True)  # (B, 1, V)
        assert logits is not None
        return logits[:, -1]

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
