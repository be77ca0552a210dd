"""GPT-2's byte-pair encoding, through tiktoken.

GPT-2 turns text into ids with byte-level BPE ([GPT-2] 2.2): 256 byte tokens,
50,000 learned merges, and one special token, <|endoftext|> = 50256, which
separates documents. tiktoken ships the same ranks under the name "r50k_base"
and is several times faster than the pure-Python original.

tiktoken downloads the ranks file once and caches it. Offline, point
TIKTOKEN_CACHE_DIR at a folder that already holds it (docs/offline.md).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from nanogpt2.errors import UserError

ENCODING_NAME = "r50k_base"  # identical ranks to OpenAI's GPT-2 encoder.json / vocab.bpe
EOT_ID = 50256  # <|endoftext|>
EOT_TEXT = "<|endoftext|>"
VOCAB_SIZE = 50257


class Tokenizer:
    """Encode text to GPT-2 token ids and back."""

    name = "gpt2"
    eot_id = EOT_ID
    vocab_size = VOCAB_SIZE

    def __init__(self, encoding) -> None:
        self._enc = encoding

    def encode(self, text: str, allow_eot: bool = False) -> list[int]:
        """Token ids of `text`. By default "<|endoftext|>" in the text is ordinary text
        (so user data can't forge document boundaries); allow_eot=True maps it to 50256."""
        if allow_eot:
            return self._enc.encode(text, allowed_special={EOT_TEXT})
        return self._enc.encode_ordinary(text)

    def encode_to_numpy(self, text: str) -> np.ndarray:
        """encode(text) as a NumPy array (no Python list of ints: much faster for big texts)."""
        if hasattr(self._enc, "encode_to_numpy"):  # tiktoken >= 0.8
            return self._enc.encode_to_numpy(text, disallowed_special=())
        return np.asarray(self._enc.encode_ordinary(text), dtype=np.uint32)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`. Invalid UTF-8 (a character cut between tokens) becomes U+FFFD."""
        return self._enc.decode(list(ids), errors="replace")

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Raw bytes of `ids`: exact even when a character is split across tokens."""
        return self._enc.decode_bytes(list(ids))


@functools.cache
def get_tokenizer() -> Tokenizer:
    """The GPT-2 tokenizer (loaded once per process)."""
    import tiktoken

    try:
        encoding = tiktoken.get_encoding(ENCODING_NAME)
    except Exception as e:  # no network and no cached ranks file, or a corrupt cache
        raise UserError(
            f"cannot load GPT-2's BPE ranks ({ENCODING_NAME}): {type(e).__name__}. "
            f"Offline? Set TIKTOKEN_CACHE_DIR to a folder holding the cached ranks file "
            f"(see docs/offline.md)"
        ) from None
    if encoding.n_vocab != VOCAB_SIZE or encoding.eot_token != EOT_ID:
        raise UserError(f"tiktoken's {ENCODING_NAME} has {encoding.n_vocab} tokens, expected GPT-2's {VOCAB_SIZE}")
    return Tokenizer(encoding)
