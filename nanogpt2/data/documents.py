"""Pretraining batches that respect documents: windows that start at one, and attention that stays inside one.

A prepared split is documents back to back, each followed by <|endoftext|> (EOT), which GPT-2
also reads as "a new text starts here". Plain batches (loader.py) cut windows anywhere, so most
windows start mid-document and attend across the EOTs into unrelated text. Two options change that:

    doc_aligned   every training window starts at an EOT: its first target is a document's first
                  token, predicted from nothing but the EOT, as when the model is prompted with
                  <|endoftext|>. The start is drawn uniformly among the EOTs that leave room for
                  a whole window (the same counter-based stream as RandomBatches, so resuming and
                  ranks work alike); a window still runs on into the next documents.
    doc_masking   attention does not cross an EOT inside a window: a new segment starts at each
                  EOT, positions restart there, and each document is computed as if it were alone
                  (GPT.forward's `examples`, the mechanism pair data uses; FlexAttention on CUDA).

modded-nanogpt trains on EOT-aligned batches with document masking; Llama 3 (Dubey et al. 2024,
section 3.2) masks attention between documents in a sequence and reports it matters for long
contexts. bench/sample_efficiency.py measures whether either helps here.
"""

from __future__ import annotations

import numpy as np
import torch

from nanogpt2.data.format import DatasetError, TokenFile, TokenStream, pieces
from nanogpt2.data.loader import RandomBatches
from nanogpt2.tokenizer import EOT_ID

CHUNK = 1 << 24  # tokens read at a time while looking for documents: 32 MB


def document_starts(tokens: TokenFile | TokenStream | np.ndarray, block_size: int) -> np.ndarray:
    """The positions of every EOT that has a whole window (block_size + 1 tokens) from it, ascending (int64)."""
    files = [f.array() for f in pieces(tokens)] if isinstance(tokens, (TokenFile, TokenStream)) else [tokens]
    found, base = [], 0
    for ids in files:  # each file mapped, read CHUNK tokens at a time
        found += [np.flatnonzero(ids[a : a + CHUNK] == EOT_ID) + base + a for a in range(0, len(ids), CHUNK)]
        base += len(ids)
    starts = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    return starts[starts <= len(tokens) - block_size - 1].astype(np.int64)  # the last start with room for a window


def document_ids(x: torch.Tensor) -> torch.Tensor:
    """(B, T) the document each position belongs to: a new one starts at every EOT (and at position 0)."""
    return (x == EOT_ID).cumsum(1)


class DocumentBatches(RandomBatches):
    """RandomBatches whose windows start at EOTs (aligned) and/or whose batches carry each position's document
    (masked): next_batch() gives (x, y, documents), documents None when not masked."""

    def __init__(self, tokens, batch_size: int, block_size: int, *, aligned: bool, masked: bool, **stream) -> None:
        super().__init__(tokens, batch_size, block_size, **stream)
        self.aligned, self.masked = aligned, masked
        if aligned:
            self.starts = document_starts(tokens, block_size)
            if len(self.starts) == 0:
                raise DatasetError(
                    f"doc_aligned=True found no <|endoftext|> with a whole window of {block_size + 1:,} tokens "
                    f"after it in this split: its documents are not separated; drop doc_aligned"
                )

    def offsets(self, step: int) -> np.ndarray:
        if not self.aligned:
            return super().offsets(step)
        return self.starts[self._stream(step).integers(0, len(self.starts), size=self.batch_size)]

    def next_batch(self):  # type: ignore[override]  # one more tensor than plain batches
        x, y = super().next_batch()
        return x, y, document_ids(x) if self.masked else None

    def state_dict(self) -> dict:
        return {**super().state_dict(), "documents": {"aligned": self.aligned, "masked": self.masked}}
