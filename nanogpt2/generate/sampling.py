"""Choosing the next token from the model's scores, and turning tokens back into text as they come.

A language model gives a score (logit) to every token in the vocabulary. How we
pick one from those scores changes the text more than most people expect:

* **temperature** divides the logits before the softmax. 1 keeps the model's
  distribution, below 1 sharpens it (safer, more repetitive text), above 1
  flattens it (more surprising, less coherent). 0 means "always the most likely
  token" (greedy decoding), which is deterministic.
* **top-k** keeps only the k most likely tokens (Fan et al. 2018, "Hierarchical
  Neural Story Generation"), so the long tail of unlikely tokens is never drawn.
* **top-p** or nucleus sampling keeps the smallest set of most likely tokens
  whose probabilities add up to at least p (Holtzman et al. 2020, "The Curious
  Case of Neural Text Degeneration"): few tokens where the model is sure, many
  where it is not.

They are applied in that order (temperature, then top-k, then top-p on what
top-k left), the order Hugging Face's `generate` uses, so the same settings
mean the same thing in both libraries.

Tokens are pieces of bytes, not of characters: "é" or an emoji can be split
across two tokens, and decoding each token on its own would print U+FFFD
replacement marks. `TextStream` holds back incomplete UTF-8 sequences until
the rest of their bytes arrive.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable

import torch

from nanogpt2.errors import UserError


def check_sampling(temperature: float, top_k: int | None, top_p: float) -> None:
    """Refuse settings that have no meaning, with the reason and the fix."""
    if not isinstance(temperature, (int, float)) or not temperature >= 0:  # `not >=` also catches NaN
        raise UserError(f"temperature must be >= 0 (0 = greedy, 1 = the model's own distribution), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise UserError(f"top_k must be a positive integer, or None to keep every token; got {top_k!r}")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1] (1 keeps every token, 0.9 is a common choice), got {top_p!r}")


def check_generation(
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float,
    window_shift: int | None,
    block_size: int,
) -> int:
    """Check GPT.generate_tokens' arguments; returns the window shift to use (see there)."""
    check_sampling(temperature, top_k, top_p)
    if idx.dim() != 2 or idx.size(1) == 0:
        raise UserError(
            f"idx must be (batch, tokens) with at least one token, got shape {tuple(idx.shape)}; "
            f"to start from nothing, start from <|endoftext|> (GPT-2: id 50256)"
        )
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise UserError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    shift = max(1, block_size // 8) if window_shift is None else window_shift
    if not isinstance(shift, int) or isinstance(shift, bool) or not 1 <= shift <= block_size:
        raise UserError(f"window_shift must be an integer in [1, block_size={block_size}], got {window_shift!r}")
    return shift


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits in each row; the rest become -inf (never sampled).

    logits: (B, V). Exactly k survive even when values tie (a threshold
    `logits >= kth_largest` would keep every tied token).
    """
    k = min(k, logits.size(-1))
    values, indices = torch.topk(logits, k, dim=-1)  # (B, k)
    return torch.full_like(logits, float("-inf")).scatter(-1, indices, values)  # (B, V)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose total probability is >= p (the nucleus).

    logits: (B, V). The most likely token always survives, so p close to 0 is greedy.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = torch.softmax(sorted_logits, dim=-1)
    # Probability mass of the tokens strictly more likely than each one. A token is in the
    # nucleus while that mass is still short of p: the first token whose inclusion reaches p
    # is the last one kept.
    mass_before = torch.cumsum(probs, dim=-1) - probs
    mass_before[..., 0] = 0.0  # exact, whatever the rounding of the subtraction
    sorted_logits = sorted_logits.masked_fill(mass_before >= p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)  # back to id order


def next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of logits (B, V) -> (B,), by the rules in the module docstring."""
    logits = logits.float()  # sample in fp32 even when the model ran in bf16/fp16
    if temperature == 0:
        return logits.argmax(dim=-1)  # greedy: top-k and top-p cannot change the argmax
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)  # filtered tokens get exactly 0
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


def make_generator(seed: int | torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """A random stream for sampling: an int seeds a new one on `device`; a Generator is used as is."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UserError(f"seed must be an integer, got {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


class TextStream:
    """Decode token ids to text one piece at a time, never splitting a UTF-8 character.

    GPT-2's tokens are byte strings ([GPT-2] 2.2, byte-level BPE). We join their
    bytes and pass them through Python's incremental UTF-8 decoder, which
    returns every complete character and keeps the bytes of an unfinished one
    for the next call.
    """

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids: Iterable[int]) -> str:
        """Text completed by these tokens (possibly "", if they end inside a character)."""
        return self._utf8.decode(self._tokenizer.decode_bytes(list(ids)))

    def finish(self) -> str:
        """Whatever is left: an unfinished character at the very end becomes U+FFFD."""
        return self._utf8.decode(b"", final=True)
