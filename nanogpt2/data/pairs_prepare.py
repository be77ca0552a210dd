"""Pair data to disk: pack each split's examples into windows, and write their tokens and loss masks.

    python data/prepare.py --input qa.csv --prompt_column question --completion_column answer --out data/qa

pairs.py reads the rows and renders each example; this lays them out for training:

    train.bin, val.bin    the token ids, uint16, as for plain text (nanoGPT's format)
    train.mask, val.mask  one byte per token: format.py's TARGET_BIT and EXAMPLE_START_BIT
    meta.json             with a "loss_mask" entry: the mask's format and version, the window, the template

Packing. Each split's examples are laid, in order, into windows of exactly
block_size + 1 tokens (inputs plus the shifted target): whole examples back to back
while they fit; when the next does not, the rest of the window is padding (id 50256,
never a target, its own segment) and a new window starts. An example is never cut
in two, so training must read whole windows: window k is tokens [k*W, (k+1)*W).
An example longer than a window is truncated to its first W tokens (dropped if its
prompt alone fills them: nothing would be trained) or, with too_long=refuse, refused.

The split is decided per example with pipeline.py's hash (example i goes to val when
a hash of (seed, i) is below val_fraction); i counts every row of every input, in
order, so the split does not depend on block_size. Each split holds back its latest
example until the next arrives, which is how an empty split can still be given the
other's last one. Files are written through atomic_write, meta.json last, as in
plain mode. Text is read as strict UTF-8: a fine-tuning set is small enough to fix.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from nanogpt2.common.files import atomic_write, write_json_atomic
from nanogpt2.common.progress import progress
from nanogpt2.data.format import (
    EXAMPLE_START_BIT,
    MASK_DTYPE,
    MASK_FORMAT,
    MASK_VERSION,
    META_FILE,
    SPLITS,
    TARGET_BIT,
    TOKEN_DTYPE,
    DatasetError,
    bin_path,
    gpt2_meta,
    mask_path,
)
from nanogpt2.data.pairs import Table, encode_example, read_examples, read_tables
from nanogpt2.data.pipeline import PrepareConfig, goes_to_val, output_folder
from nanogpt2.errors import plural
from nanogpt2.tokenizer import EOT_ID, get_tokenizer

PADDING_ID = EOT_ID  # never a target: the mask, not the id, tells padding from an answer's end


class _Packer:
    """Lays one split's examples into windows and writes each window to the split's .bin and .mask files."""

    def __init__(self, bin_file: IO[bytes], mask_file: IO[bytes], window: int) -> None:
        self.bin_file, self.mask_file, self.window = bin_file, mask_file, window
        self.ids = np.full(window, PADDING_ID, dtype=TOKEN_DTYPE)
        self.mask = np.zeros(window, dtype=MASK_DTYPE)
        self.fill = 0  # tokens of the current window in use
        self.windows = self.examples = self.padding = 0
        self.max_id = -1

    def add(self, ids: np.ndarray, trained: np.ndarray) -> None:
        """Append an example of at most `window` tokens, in a new window if it does not fit in this one."""
        if self.fill + len(ids) > self.window:
            self._write()
        start, end = self.fill, self.fill + len(ids)
        self.ids[start:end] = ids
        self.mask[start:end] = trained * TARGET_BIT
        self.mask[start] |= EXAMPLE_START_BIT
        self.fill, self.examples = end, self.examples + 1
        if end == self.window:
            self._write()

    def close(self) -> None:
        if self.fill:
            self._write()

    def _write(self) -> None:
        """Pad the window (its padding a segment of its own, never a target), write it, start the next."""
        if self.fill < self.window:
            self.ids[self.fill :] = PADDING_ID
            self.mask[self.fill :] = 0
            self.mask[self.fill] = EXAMPLE_START_BIT
            self.padding += self.window - self.fill
        self.bin_file.write(self.ids.tobytes())
        self.mask_file.write(self.mask.tobytes())
        self.max_id = max(self.max_id, int(self.ids.max()))
        self.windows, self.fill = self.windows + 1, 0

    @property
    def tokens(self) -> int:
        return self.windows * self.window


def prepare_pairs(cfg: PrepareConfig, say: Callable[[str], None] = print) -> dict:
    """Write cfg.out/{train,val}.{bin,mask} and meta.json from pair data; return the meta.json contents."""
    tables = read_tables(cfg.inputs, (lambda line: None) if cfg.quiet else say, cfg.hf_split, cfg.streaming)
    get_tokenizer()  # fails here, before any work, if the tokenizer cannot load
    window = cfg.block_size + 1
    with output_folder(cfg) as out:
        with contextlib.ExitStack() as stack:  # on leaving without an error, all four files replace the old ones
            packers = [
                _Packer(
                    stack.enter_context(atomic_write(bin_path(out, s))),
                    stack.enter_context(atomic_write(mask_path(out, s))),
                    window,
                )
                for s in SPLITS
            ]
            t0 = time.perf_counter()
            truncated, dropped = _pack_all(cfg, tables, packers)
            seconds = time.perf_counter() - t0
            _check_splits(cfg, packers, dropped)
        meta = gpt2_meta(
            {s: {"tokens": p.tokens, "documents": p.examples} for s, p in zip(SPLITS, packers)},
            max_id=max(p.max_id for p in packers),
            sources=[t.where for t in tables],
            split=f"by example: BLAKE2 hash of (seed, example index) < val_fraction={cfg.val_fraction:g}"
            if cfg.val_fraction
            else "none: val_fraction=0, every example is train",
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            columns={"messages": cfg.messages_column}
            if cfg.chat
            else {"prompt": cfg.prompt_column, "completion": cfg.completion_column},
            created=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            loss_mask={
                "format": MASK_FORMAT,
                "version": MASK_VERSION,
                "dtype": "uint8",
                "target_bit": TARGET_BIT,
                "example_start_bit": EXAMPLE_START_BIT,
                "window": window,
                "template": cfg.template,
                "examples": {s: p.examples for s, p in zip(SPLITS, packers)},
                "truncated": truncated,
                "dropped": dropped,
                "padding_id": PADDING_ID,
            },
        )
        write_json_atomic(out / META_FILE, meta)  # last: it vouches for the four files
    if not cfg.quiet:
        _summary(say, out, meta, packers, seconds)
    return meta


def _pack_all(cfg: PrepareConfig, tables: list[Table], packers: list[_Packer]) -> tuple[int, int]:
    """Stream every example into its split's packer; returns (truncated, dropped)."""
    window = cfg.block_size + 1
    pending: list[tuple[np.ndarray, np.ndarray] | None] = [None, None]  # each split's latest example, held back
    truncated = dropped = 0
    with progress(desc=f"packing examples into {cfg.out}", unit="example", disable=cfg.quiet) as bar:
        for index, (where, parts) in enumerate(read_examples(cfg, tables)):
            split = int(goes_to_val(cfg.seed, index, cfg.val_fraction))  # every row counts, kept or not
            ids, trained = encode_example(parts)
            if len(ids) > window:
                if cfg.too_long == "refuse":
                    raise DatasetError(
                        f"{where}: the example is {plural(len(ids), 'token')}, more than one window of {window:,} "
                        f"(block_size={cfg.block_size} + 1); shorten it, raise --block_size, or pass "
                        f"--too_long=truncate to keep its first {window:,} tokens"
                    )
                ids, trained = ids[:window], trained[:window]
                if not trained.any():  # its prompt alone fills the window: nothing to learn from
                    dropped += 1
                    continue
                truncated += 1
            held = pending[split]
            if held is not None:
                packers[split].add(*held)
            pending[split] = ids, trained
            bar.update(1)
            if bar.n % 1024 == 0:
                bar.set_postfix_str(f"{packers[0].windows + packers[1].windows:,} windows", refresh=False)
        if cfg.val_fraction:  # chance sent every example to one split: its last one moves over, as in plain mode
            for empty, full in ((1, 0), (0, 1)):
                if pending[empty] is None and pending[full] is not None and packers[full].examples:
                    pending[empty], pending[full] = pending[full], None
        for packer, held in zip(packers, pending):
            if held is not None:
                packer.add(*held)
            packer.close()
    return truncated, dropped


def _check_splits(cfg: PrepareConfig, packers: list[_Packer], dropped: int) -> None:
    total = packers[0].examples + packers[1].examples
    if total == 0:
        raise DatasetError(
            f"no example is left to train on: all {plural(dropped, 'example')} have a prompt that fills a window "
            f"of {cfg.block_size + 1:,} tokens by itself; raise --block_size or shorten the prompts"
        )
    for split, packer in zip(SPLITS, packers):
        if not packer.examples and not (split == "val" and cfg.val_fraction == 0):
            raise DatasetError(
                f"the {split} split has no example: there is only {plural(total, 'example')} to split; give more "
                f"rows, or pass --val_fraction=0 to train without a validation split"
            )


def _summary(say: Callable[[str], None], out: Path, meta: dict, packers: list[_Packer], seconds: float) -> None:
    block = meta["loss_mask"]
    splits = ", ".join(
        f"{split} {plural(p.examples, 'example')} in {plural(p.windows, 'window')} ({plural(p.tokens, 'token')})"
        for split, p in zip(SPLITS, packers)
    )
    tokens = sum(p.tokens for p in packers)
    say(
        f"wrote {out}: {splits}, windows of {block['window']:,} tokens; {block['truncated']:,} truncated, "
        f"{block['dropped']:,} dropped; padding is {sum(p.padding for p in packers) / tokens:.1%} of the tokens "
        f"({seconds:.1f}s)"
    )
    if block["truncated"] or block["dropped"]:
        say(
            "note: examples longer than a window lose their end (truncated) or, when the prompt alone fills it, "
            "are left out (dropped); raise --block_size to keep them whole, or --too_long=refuse to list them"
        )
    if not packers[1].examples:
        say("no validation split (val_fraction=0): train with --eval_interval=0 (no evaluation)")
