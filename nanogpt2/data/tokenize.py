"""Tokenizing big text in pieces, on several threads, with exactly the ids of tokenizing it whole.

Why pieces: one 40 GB text file is one document, but it cannot be one string in
memory, and one string cannot be spread over several cores. So long text is
cut into pieces of about PIECE_CHARS characters and each piece is tokenized on
its own.

Why the ids do not change: GPT-2's tokenizer first splits text with a regular
expression into "pre-tokens" (words with their leading space, runs of digits,
runs of punctuation, runs of whitespace; [GPT-2] 2.2) and BPE never merges
across two of them. The pattern, in the form GPT-2's encoder.py and tiktoken's
r50k_base both express (tiktoken writes it with possessive quantifiers), is

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+$|\\s+(?!\\S)|\\s

It has no look-behind, so after a pre-token boundary the rest of the text is
split the same way whether or not it has text before it. We cut only where the
pattern always puts a boundary *and* the text before the cut ends in the same
pre-token on its own:

* after a newline that has a non-space before it and a non-space after it
  ("...end.\\nNext"): the lone "\\n" is its own pre-token in both cases;
* between an ASCII letter and " letter" ("word| next"): a letter run stops
  at the space, and " next" starts the next pre-token either way.

Ordinary prose has such places every few characters; tests/test_data_tokenize.py
checks the equality on a corpus of plays and on adversarial strings. Text with no
such place in a whole piece (a megabyte of base64, say) is cut hard, which can
change the ids at that one spot and nowhere else.

Why threads: tiktoken's Rust core releases Python's GIL while it encodes, so
threads encode in parallel with no copying of text to other processes and no
start-up cost, nearly as fast as processes (bench/data.py measures both; bench/README.md
has the record). `encode_to_numpy`
hands back a NumPy buffer instead of a Python list of ints.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from nanogpt2.tokenizer import EOT_ID, get_tokenizer

PIECE_CHARS = 1 << 18  # 256K characters: small enough to share out, big enough that overheads vanish
_SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)|(?<=[A-Za-z])(?= [A-Za-z])")
_SEARCH = 1 << 16  # look for a safe cut in the last 64K characters before the limit


def safe_cut(text: str, limit: int) -> int:
    """A position 0 < p <= limit at which text can be cut without changing its tokens
    (the last safe one before `limit`); `limit` itself when there is none."""
    start = max(1, limit - _SEARCH)
    while True:
        last = None
        for m in _SAFE_CUT.finditer(text, start, limit):
            last = m.start()
        if last is not None:
            return last
        if start <= max(1, limit // 2):  # nothing safe in the second half: cut hard
            return limit
        start = max(1, limit // 2)


class Piecer:
    """Collects a document's text as it arrives and hands out tokenizable pieces of at most `max_chars`."""

    def __init__(self, max_chars: int | None = None) -> None:
        self.max_chars = max_chars or PIECE_CHARS
        self.carry = ""

    def feed(self, text: str, ends_document: bool) -> list[str]:
        """Pieces ready to tokenize; at the end of a document, everything that is left."""
        self.carry = self.carry + text if self.carry else text
        out = []
        while len(self.carry) > self.max_chars:
            cut = safe_cut(self.carry, self.max_chars)
            out.append(self.carry[:cut])
            self.carry = self.carry[cut:]
        if ends_document:
            out.append(self.carry)
            self.carry = ""
        return out


def numpy_encoder() -> Callable[[str], np.ndarray]:
    """encode(text) -> np.ndarray of GPT-2 ids, treating "<|endoftext|>" in the text as
    ordinary characters (so no input can forge a document boundary)."""
    return get_tokenizer().encode_to_numpy


_EOT = np.array([EOT_ID], dtype=np.uint16)


def encode_unit(encode: Callable[[str], np.ndarray], items: list[tuple[str, bool, int]]):
    """Tokenize a unit of work: items are (text, ends_document, split) with split 0 (train) or 1 (val).

    Returns ([train ids, val ids] as uint16 arrays, the number of ids each item added,
    end-of-text included when the item ends its document).
    """
    parts: list[list[np.ndarray]] = [[], []]
    lengths = []
    for text, ends, split in items:
        ids = encode(text).astype(np.uint16) if text else np.zeros(0, np.uint16)  # GPT-2's ids < 2**16
        parts[split].append(ids)
        if ends:
            parts[split].append(_EOT)
        lengths.append(len(ids) + int(ends))
    arrays = [np.concatenate(p) if p else np.zeros(0, np.uint16) for p in parts]
    return arrays, lengths
