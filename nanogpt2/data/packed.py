"""Batches of pair data: whole packed windows, the loss mask on the targets, and which example each position is.

Pair data (data/pairs.py) is stored as windows of block_size + 1 tokens, each holding whole
prompt/answer examples back to back and then padding, with one mask byte per token (format.py's
TARGET_BIT: the token is trained on; EXAMPLE_START_BIT: an example starts here). A batch is a
few whole windows, drawn at random as RandomBatches draws its windows (the same counter-based
stream, so resuming is exact and ranks deal the batches out alike), or all of them once, in order,
for an exact evaluation. From a window w:

    x        = w[:-1]                                          the inputs, (B, T)
    y        = w[1:], and -1 where that token is not a target  the loss counts completions and their EOT
    examples = the example each position of x belongs to        0, 0, ..., 1, 1, ... per row (B, T)

The model keeps attention inside an example and restarts positions at each one (GPT.forward's
`examples`), so that a packed example is computed exactly as it would be alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from nanogpt2.data.format import EXAMPLE_START_BIT, TARGET_BIT, DatasetError, MaskFile, TokenFile
from nanogpt2.data.loader import RandomBatches, _to_device, _WindowReader
from nanogpt2.errors import check_positive_int

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # x, y, examples (None: attention may cross)


def check_window(window: int, block_size: int) -> None:
    """Pair data is packed for one block_size: train and evaluate with that one."""
    if block_size + 1 != window:
        raise DatasetError(
            f"this pair data is packed in windows of {window:,} tokens, for block_size={window - 1:,}: train with "
            f"--block_size={window - 1}, or prepare it again with data/prepare.py --block_size {block_size}"
        )


def assemble(
    tokens: np.ndarray, mask: np.ndarray, device: torch.device, loss_mask: bool = True, example_masking: bool = True
) -> Batch:
    """(x, y, examples) from rows of whole windows: tokens (B, T + 1) uint16 and their mask bytes (B, T + 1)."""
    pin = device.type == "cuda"
    B, T = tokens.shape[0], tokens.shape[1] - 1
    x = torch.empty((B, T), dtype=torch.int64, pin_memory=pin)
    y = torch.empty((B, T), dtype=torch.int64, pin_memory=pin)
    np.copyto(x.numpy(), tokens[:, :-1], casting="unsafe")
    yn = y.numpy()
    np.copyto(yn, tokens[:, 1:], casting="unsafe")
    if loss_mask:
        yn[(mask[:, 1:] & TARGET_BIT) == 0] = -1  # prompts and padding are read, never predicted
    examples = None
    if example_masking:
        examples = torch.empty((B, T), dtype=torch.int64, pin_memory=pin)
        starts = (mask[:, :-1] & EXAMPLE_START_BIT) != 0
        np.cumsum(starts, axis=1, out=examples.numpy())  # 1, 1, ..., 2, ...: every window starts an example
        examples = _to_device(examples, device)
    return _to_device(x, device), _to_device(y, device), examples


class PackedBatches(RandomBatches):
    """Random whole windows of pair data, reproducible from (seed, rank, world_size, step) like RandomBatches."""

    def __init__(
        self,
        tokens: TokenFile,
        mask: MaskFile,
        batch_size: int,
        block_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        loss_mask: bool = True,
        example_masking: bool = True,
    ) -> None:
        if len(mask) != len(tokens):
            raise DatasetError(f"{mask.path} has {len(mask):,} bytes for {len(tokens):,} tokens: one per token")
        super().__init__(tokens, batch_size, block_size, seed=seed, rank=rank, world_size=world_size, device=device)
        self.windows = len(tokens) // (block_size + 1)
        self.mask_reader = _WindowReader(mask)
        self._mask = np.empty((batch_size, block_size + 1), dtype=mask.dtype)
        self.loss_mask, self.example_masking = loss_mask, example_masking

    def offsets(self, step: int) -> np.ndarray:
        """Start positions of the windows of batch `step`: whole windows, each a multiple of block_size + 1."""
        return self._stream(step).integers(0, self.windows, size=self.batch_size) * (self.block_size + 1)

    def next_batch(self) -> Batch:  # type: ignore[override]  # one more tensor than plain batches
        """The next (x, y, examples), each (batch_size, block_size) int64 on the device (examples: None when
        example masking is off)."""
        for row, mask_row, start in zip(self._window, self._mask, self.offsets(self.step).tolist()):
            self.reader.read(row, start)
            self.mask_reader.read(mask_row, start)
        self.step += 1
        return assemble(self._window, self._mask, self.device, self.loss_mask, self.example_masking)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "packed_window": self.block_size + 1}


def count_packed_batches(windows: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> int:
    """How many batches packed_sequential_batches yields on this rank."""
    check_positive_int("batch_size", batch_size)
    return math.ceil(len(range(rank, windows, world_size)) / batch_size)


def packed_sequential_batches(
    tokens: TokenFile,
    mask: MaskFile,
    batch_size: int,
    block_size: int,
    *,
    device: str | torch.device = "cpu",
    rank: int = 0,
    world_size: int = 1,
    loss_mask: bool = True,
    example_masking: bool = True,
) -> Iterator[Batch]:
    """Every window once, in order (window i to rank i % world_size): an exact pass over a split's targets.
    The last batch is filled with windows of no targets, so that every batch has one shape."""
    device = torch.device(device)
    window = block_size + 1
    reader, mask_reader = _WindowReader(tokens), _WindowReader(mask)
    mine = range(rank, len(tokens) // window, world_size)
    for first in range(0, len(mine), batch_size):
        rows = np.zeros((batch_size, window), dtype=tokens.dtype)
        masks = np.full((batch_size, window), EXAMPLE_START_BIT, dtype=mask.dtype)  # filler: no targets
        for row, w in enumerate(mine[first : first + batch_size]):
            reader.read(rows[row], w * window)
            mask_reader.read(masks[row], w * window)
        x, y, examples = assemble(rows, masks, device, loss_mask, example_masking)
        if not loss_mask:  # the filler rows must not count, masked or not
            filler = len(mine[first : first + batch_size])
            y[filler:] = -1
        yield x, y, examples
