"""Batches for training and evaluation, read straight from the token files.

Training: `RandomBatches` draws `batch_size` windows of `block_size + 1` tokens at
random offsets, x = window[:-1] and y = window[1:] (next-token prediction). There
is one stream of batches per seed, numbered 0, 1, 2, ...; the ranks of a
`torch.distributed` run deal it out like cards: batch `step` of rank r is batch
`step * world_size + r` of the stream. The offsets of each batch come from a
random generator keyed by the seed and positioned at that number alone, so:

* the same seed gives the same batches, on any machine;
* each rank draws its own windows, and together they draw exactly the batches one
  process would: 8 GPUs with 4 micro-steps each train on what 1 GPU with 32 would;
* the loader's whole state is the step counter: saving it in a checkpoint and
  restoring it continues with exactly the batches an uninterrupted run would see.

Evaluation: `sequential_batches` walks a split once in non-overlapping windows,
so every token after the first is a target exactly once and the mean loss is the
exact loss of the split, not an estimate from a few random batches.

Memory: reading windows by indexing an np.memmap maps each touched page of the
file into the process, and those pages count as its resident memory; over
millions of random batches that climbs to the file size (OpenWebText: 17 GiB),
which looks like a leak and can trip a container's memory limit. nanoGPT
re-creates its memmap for every batch to avoid this. Given a split as a
`TokenFile` (what `Dataset.split` returns: the file and where its tokens start;
for llm.c shards a `TokenStream` of them, a window spanning two read from both),
we read each window with `os.preadv` into a reused buffer instead: the process
never maps the file, the kernel's page cache still keeps hot data in RAM, and
resident memory stays flat. A NumPy array is simply indexed.

CUDA: batches are assembled in page-locked (pinned) host memory and copied with
non_blocking=True, so the copy overlaps the previous step's GPU work. PyTorch's
pinned-memory allocator only recycles a buffer after its copy has finished, so
several batches may be in flight at once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import torch

from nanogpt2.data.format import DatasetError, TokenFile, TokenStream, pieces
from nanogpt2.errors import check_positive_int, plural

STATE_VERSION = 1
_MASK64 = (1 << 64) - 1


class _WindowReader:
    """Copies tokens[start : start + n] into a buffer row: with pread from a TokenFile or each file of a
    TokenStream (llm.c shards) it spans, by indexing an array."""

    def __init__(self, tokens: TokenFile | TokenStream | np.ndarray) -> None:
        self.files: tuple[TokenFile, ...] | None = None
        if isinstance(tokens, (TokenFile, TokenStream)) and hasattr(os, "preadv"):
            self.files = pieces(tokens)
            self.starts = np.cumsum([0] + [len(f) for f in self.files])  # where each file's ids begin
        elif isinstance(tokens, (TokenFile, TokenStream)):  # no pread on this system (Windows): map the files
            tokens = tokens.array() if isinstance(tokens, TokenFile) else np.asarray(tokens)
        elif tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise DatasetError(f"tokens must be a 1-D array of integer ids, got {tokens.ndim}-D {tokens.dtype}")
        self.tokens = tokens
        self._fds: dict[int, int] = {}
        self._pid: int | None = None

    def read(self, row: np.ndarray, start: int) -> None:
        if self.files is None:
            assert isinstance(self.tokens, np.ndarray)
            row[:] = self.tokens[start : start + len(row)]
            return
        if self._pid != os.getpid():  # (re)open lazily: a forked child must not share its parent's descriptors
            self._fds, self._pid = {}, os.getpid()
        done, index = 0, int(np.searchsorted(self.starts, start, side="right")) - 1
        while done < len(row) and index < len(self.files):
            within = start + done - int(self.starts[index])
            n = min(len(row) - done, len(self.files[index]) - within)
            self._pread(index, row[done : done + n], within)
            done, index = done + n, index + 1
        if done != len(row):
            raise DatasetError(f"a window at token {start:,} runs past the split's end ({len(self.tokens):,} tokens)")

    def _pread(self, index: int, part: np.ndarray, within: int) -> None:
        file = self.files[index]  # type: ignore[index]
        if index not in self._fds:
            self._fds[index] = os.open(file.path, os.O_RDONLY)
        got = os.preadv(self._fds[index], [part], file.offset + within * part.itemsize)  # type: ignore[list-item]
        if got != part.nbytes:
            raise DatasetError(
                f"{file.path} became shorter while training (read {got} of {part.nbytes} bytes at "
                f"token {within:,}); was the dataset prepared again? restart the run"
            )

    def __del__(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)


def _to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    return host.to(device, non_blocking=True) if device.type == "cuda" else host


def _check_sizes(batch_size: int, block_size: int) -> None:
    check_positive_int("batch_size", batch_size)
    check_positive_int("block_size", block_size)


class RandomBatches:
    """Random (x, y) training windows, reproducible from (seed, rank, world_size, step)."""

    def __init__(
        self,
        tokens: TokenFile | TokenStream | np.ndarray,
        batch_size: int,
        block_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
    ) -> None:
        _check_sizes(batch_size, block_size)
        if not 0 <= rank < world_size:
            raise DatasetError(f"rank={rank} with world_size={world_size}: need 0 <= rank < world_size")
        n = len(tokens)
        if n <= block_size:
            raise DatasetError(
                f"this split has {plural(n, 'token')}, but one training window needs block_size + 1 = "
                f"{block_size + 1:,}: lower --block_size or prepare more text"
            )
        self.reader = _WindowReader(tokens)
        self.num_tokens, self.batch_size, self.block_size = n, batch_size, block_size
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.device = torch.device(device)
        self.step = 0
        self._window = np.empty((batch_size, block_size + 1), dtype=tokens.dtype)

    def _stream(self, step: int) -> np.random.Generator:
        """The random numbers of batch `step` of this rank, and no other batch's."""
        # Philox is a counter-based generator (Salmon et al. 2011, "Parallel random numbers: as easy
        # as 1, 2, 3"): keyed by the seed and started at a counter holding the batch's number in
        # the shared stream, it jumps straight to any batch. The number sits in the counter's third
        # word; drawing a batch only advances the first, so batches never share random numbers.
        index = step * self.world_size + self.rank
        key = np.array([self.seed & _MASK64, 0], dtype=np.uint64)
        counter = np.array([0, 0, index & _MASK64, index >> 64], dtype=np.uint64)
        return np.random.Generator(np.random.Philox(key=key, counter=counter))

    def offsets(self, step: int) -> np.ndarray:
        """Start positions of the windows of batch `step` (each in [0, num_tokens - block_size - 1])."""
        return self._stream(step).integers(0, self.num_tokens - self.block_size, size=self.batch_size)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y), each (batch_size, block_size) int64 on the device; y[:, t] follows x[:, t]."""
        for row, start in zip(self._window, self.offsets(self.step).tolist()):
            self.reader.read(row, start)
        self.step += 1
        pin = self.device.type == "cuda"
        shape = (self.batch_size, self.block_size)
        x = torch.empty(shape, dtype=torch.int64, pin_memory=pin)
        y = torch.empty(shape, dtype=torch.int64, pin_memory=pin)
        np.copyto(x.numpy(), self._window[:, :-1], casting="unsafe")  # uint16 -> int64, widening
        np.copyto(y.numpy(), self._window[:, 1:], casting="unsafe")
        return _to_device(x, self.device), _to_device(y, self.device)

    def state_dict(self) -> dict:
        """Plain ints and strings (safe for torch.load(weights_only=True)): the step and what defines the stream."""
        return {
            "kind": "RandomBatches",
            "version": STATE_VERSION,
            "step": self.step,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "block_size": self.block_size,
            "num_tokens": self.num_tokens,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved state: the next batches are those the saved loader would have produced
        next (given the same data, batch_size and block_size). This loader keeps its own rank."""
        if not isinstance(state, dict) or state.get("kind") != "RandomBatches" or "step" not in state:
            raise DatasetError(
                "the checkpoint's data-loader state is not a RandomBatches state; resume from a "
                "checkpoint written by this version of nanogpt2"
            )
        if state.get("version", 0) > STATE_VERSION:
            raise DatasetError(f"the checkpoint's loader state has version {state['version']}; update nanogpt2")
        self.step = int(state["step"])
        self.seed = int(state.get("seed", self.seed))


def _windows_of_rank(num_tokens: int, block_size: int, rank: int, world_size: int) -> range:
    windows = math.ceil((num_tokens - 1) / block_size) if num_tokens > 1 else 0
    return range(rank, windows, world_size)  # dealt round-robin: the ranks' windows are disjoint and cover all


def count_sequential_batches(
    num_tokens: int, batch_size: int, block_size: int, *, rank: int = 0, world_size: int = 1
) -> int:
    """How many batches sequential_batches yields on this rank (for a progress bar)."""
    _check_sizes(batch_size, block_size)
    return math.ceil(len(_windows_of_rank(num_tokens, block_size, rank, world_size)) / batch_size)


def sequential_batches(
    tokens: TokenFile | TokenStream | np.ndarray,
    batch_size: int,
    block_size: int,
    *,
    device: str | torch.device = "cpu",
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One exact pass over a split: non-overlapping windows in which every token after the first is a
    target once. Window w covers x = tokens[w*T : w*T+T], y = tokens[w*T+1 : w*T+T+1].

    The last window may be short: its x is padded with 0 and its y with -1 (ignored by the loss).
    The last batch is padded to batch_size rows the same way (all -1 targets), so every batch has
    one shape and a compiled model is not recompiled for it. With world_size > 1, window w goes to
    rank w % world_size, so the ranks together cover the split once.
    """
    _check_sizes(batch_size, block_size)
    if not 0 <= rank < world_size:
        raise DatasetError(f"rank={rank} with world_size={world_size}: need 0 <= rank < world_size")
    device = torch.device(device)
    reader = _WindowReader(tokens)
    n, T = len(tokens), block_size
    windows = _windows_of_rank(n, T, rank, world_size)
    buf = np.empty(T + 1, dtype=tokens.dtype)
    pin = device.type == "cuda"
    for first in range(0, len(windows), batch_size):
        x = torch.zeros((batch_size, T), dtype=torch.int64, pin_memory=pin)
        y = torch.full((batch_size, T), -1, dtype=torch.int64, pin_memory=pin)
        xn, yn = x.numpy(), y.numpy()
        for row, w in enumerate(windows[first : first + batch_size]):
            start = w * T
            length = min(T, n - 1 - start)  # targets in this window
            view = buf[: length + 1]
            reader.read(view, start)
            xn[row, :length] = view[:-1]
            yn[row, :length] = view[1:]
        yield _to_device(x, device), _to_device(y, device)
