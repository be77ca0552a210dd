"""The on-disk token format: train.bin, val.bin and meta.json, and how to open it safely.

A prepared dataset is a folder:

    train.bin   token ids of the training split, raw little-endian uint16, nothing else
    val.bin     the same for the validation split
    meta.json   what the ids mean and how many there are (written last, see below)

Raw uint16 is the format nanoGPT's prepare scripts already write, so folders
prepared by nanoGPT load here unchanged. A folder of llm.c's token shards (a header,
then the same uint16 ids) opens too, each split read as one stream (llmc.py). GPT-2's 50,257 ids fit in 16 bits, half
the bytes of int32: a 9-billion-token OpenWebText is 18 GB (17 GiB) instead of 36.
Each document is followed by the end-of-text id (50256), the separator of GPT-2's
tokenizer, as nanoGPT's openwebtext/prepare.py does.

meta.json is the folder's table of contents: the tokenizer, the vocabulary size,
the end-of-text id, the largest id the files hold, and the token and document counts
of each split. Because the
counts are in it, a truncated copy (an interrupted `cp`, a full disk) or a
train.bin from another preparation is refused with a message instead of
training on the wrong data. The preparer writes it last (nanogpt2/common/files.py),
so an interrupted preparation never leaves a folder whose meta.json vouches for
half-written token files. An id at or above the vocabulary size is refused when the
folder is opened, not when a batch happens to hold it: from meta.json's max_id, or, for
a folder without one (nanoGPT's), by reading the files once (first_id_at_least).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np

from nanogpt2.errors import UserError, plural
from nanogpt2.tokenizer import ENCODING_NAME, EOT_ID, VOCAB_SIZE

FORMAT_NAME = "nanogpt2-tokens"
FORMAT_VERSION = 1
SPLITS = ("train", "val")
TOKEN_DTYPE = np.dtype("<u2")  # little-endian uint16, whatever the machine's byte order
MASK_DTYPE = np.dtype("u1")  # pair data's loss mask: one byte per token
MASK_FORMAT, MASK_VERSION = "nanogpt2-loss-mask", 1
TARGET_BIT, EXAMPLE_START_BIT = 1, 2  # a mask byte: the token is trained on; the token starts an example
META_FILE = "meta.json"


class DatasetError(UserError):
    """A dataset folder or an input that cannot be used as it is; the message says what to do."""


def bin_path(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}.bin"


def mask_path(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}.mask"


def gpt2_meta(counts: dict[str, dict] | None = None, **extra) -> dict:
    """The meta.json of a GPT-2-tokenized dataset. `counts`: {"train": {"tokens": n, "documents": d}, ...}."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "dtype": "uint16",
        "byte_order": "little",
        "tokenizer": "gpt2",
        "encoding": ENCODING_NAME,
        "vocab_size": VOCAB_SIZE,
        "eot_id": EOT_ID,
        "splits": counts or {},
        **extra,
    }


F = TypeVar("F", bound="TokenFile")


@dataclasses.dataclass(frozen=True)
class TokenFile:
    """`length` token ids stored in `path` from byte `offset` on, as little-endian uint16.

    This is how the data layer hands a split to the batch loader: the loader reads its
    windows straight from the file with os.preadv (see loader.py), so it needs the file
    and where the tokens start, not an array. `array()` maps the ids as a read-only
    NumPy array for looking at them; `tokens[a:b]` is the TokenFile of a run of them.
    """

    path: Path
    offset: int
    length: int
    dtype: ClassVar[np.dtype] = TOKEN_DTYPE  # a class constant, not a field: what the bytes are

    @classmethod
    def whole(cls: type[F], path: str | os.PathLike) -> F:
        """Every token of the file `path`."""
        path = Path(path)
        return cls(path, 0, path.stat().st_size // cls.dtype.itemsize)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self: F, index: slice) -> F:
        if not isinstance(index, slice):
            raise TypeError("a TokenFile takes slices, tokens[a:b]; use .array() for single ids")
        start, stop, step = index.indices(self.length)
        if step != 1:
            raise TypeError("a TokenFile takes contiguous slices only (no step)")
        return type(self)(self.path, self.offset + start * self.dtype.itemsize, max(0, stop - start))

    def array(self) -> np.ndarray:
        """The ids as a read-only 1-D uint16 array backed by the file (np.memmap: nothing is read
        until used, so an 18 GB split costs no memory)."""
        if self.length == 0:  # mmap cannot map zero bytes
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=(self.length,))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # np.asarray(tokens), np.array_equal(tokens, ...)
        array = self.array()
        return array if dtype is None else array.astype(dtype)


@dataclasses.dataclass(frozen=True)
class TokenStream:
    """Several TokenFiles read as one run of ids, in order: a split stored as shards (llm.c's, llmc.py).
    The batch loader reads a window that spans two pieces from both."""

    pieces: tuple[TokenFile, ...]
    dtype: ClassVar[np.dtype] = TOKEN_DTYPE

    def __len__(self) -> int:
        return sum(len(p) for p in self.pieces)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # reads every piece into memory: for small data
        array = np.concatenate([p.array() for p in self.pieces]) if self.pieces else np.zeros(0, self.dtype)
        return array if dtype is None else array.astype(dtype)


def pieces(tokens: TokenFile | TokenStream) -> tuple[TokenFile, ...]:
    """The files a split's ids are in, in order: one for a TokenFile."""
    return tokens.pieces if isinstance(tokens, TokenStream) else (tokens,)


class MaskFile(TokenFile):
    """A split's loss mask: one uint8 per token of its .bin (pair data; TARGET_BIT and EXAMPLE_START_BIT)."""

    dtype = MASK_DTYPE


class Dataset:
    """An opened dataset folder: its splits' token files plus the facts from meta.json."""

    def __init__(self, path: Path, meta: dict) -> None:
        self.path = Path(path)
        self.meta = meta

    def split(self, name: str) -> TokenFile:
        """The token ids of split `name`: its file (for the batch loader; `.array()` to read them)."""
        return TokenFile.whole(bin_path(self.path, self._check(name)))

    def mask(self, name: str) -> MaskFile | None:
        """Split `name`'s loss mask (pair data), or None for plain text, where every token is a target."""
        if "loss_mask" not in self.meta:
            return None
        return MaskFile.whole(mask_path(self.path, self._check(name)))

    @property
    def window(self) -> int | None:
        """Tokens per packed window of pair data (block_size + 1), or None for a plain token stream."""
        return int(self.meta["loss_mask"]["window"]) if "loss_mask" in self.meta else None

    def num_tokens(self, name: str) -> int:
        """Number of tokens in split `name` (from the file size; equal to meta.json's count)."""
        return len(self.split(name))

    @staticmethod
    def _check(name: str) -> str:
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}: a dataset has {' and '.join(SPLITS)}")
        return name

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={self.num_tokens(s):,}" for s in SPLITS)
        return f"Dataset({str(self.path)!r}, {counts} tokens)"


def open_dataset(path: str | os.PathLike) -> Dataset:
    """Open a prepared dataset folder, checking that its files are whole and mean what meta.json says.

    A folder with train.bin and val.bin but no meta.json (prepared by nanoGPT) is read
    as GPT-2 tokens in uint16. Raises DatasetError naming the problem and the fix.
    """
    folder = Path(path).expanduser()
    redo = f"prepare it again with `python data/prepare.py --input YOUR_TEXT --out {folder}`"
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DatasetError(f"dataset folder {folder} {what}; {redo}")
    from nanogpt2.data.llmc import find_shards, open_shards

    missing = [bin_path(folder, s).name for s in SPLITS if not bin_path(folder, s).is_file()]
    shards = find_shards(folder) if not (folder / META_FILE).is_file() else None
    if shards:
        sharded = open_shards(folder, shards)
        _check_ids(sharded, redo)
        return sharded
    if missing:
        raise DatasetError(f"dataset folder {folder} has no {' or '.join(missing)}; {redo}")
    meta_file = folder / META_FILE
    if meta_file.is_file():
        meta = _read_meta(meta_file, redo)
    elif (folder / "meta.pkl").is_file():
        # nanoGPT's character-level recipes write meta.pkl with their own vocabulary: reading
        # those ids as GPT-2 BPE would train and sample gibberish without any error.
        raise DatasetError(
            f"{folder} was prepared with nanoGPT's character-level vocabulary (meta.pkl); nanogpt2 reads "
            f"GPT-2 tokens only: {redo}"
        )
    else:
        meta = gpt2_meta(origin="nanoGPT-style folder without meta.json: read as GPT-2 uint16 tokens")
    _check_sizes(folder, meta, redo)
    dataset = Dataset(folder, meta)
    _check_ids(dataset, redo)
    if "loss_mask" in meta:
        _check_masks(folder, meta, redo)
    return dataset


def _read_meta(meta_file: Path, redo: str) -> dict:
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{meta_file} is unreadable ({type(e).__name__}: {e}); {redo}") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{meta_file} is not a JSON object; {redo}")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise DatasetError(f"{meta_file} has no format_version: it was not written by data/prepare.py; {redo}")
    if version > FORMAT_VERSION:
        raise DatasetError(
            f"{meta_file} has format_version {version!r}; this nanogpt2 reads versions up to "
            f"{FORMAT_VERSION}: update nanogpt2 or {redo}"
        )
    if meta.get("dtype", "uint16") != "uint16" or meta.get("byte_order", "little") != "little":
        raise DatasetError(
            f"{meta_file} describes {meta.get('byte_order')}-endian {meta.get('dtype')} tokens, "
            f"but nanogpt2 reads little-endian uint16; {redo}"
        )
    vocab = meta.get("vocab_size")
    if not isinstance(vocab, int) or not 0 < vocab <= 2**16:
        raise DatasetError(f"{meta_file} has vocab_size {vocab!r}, which does not fit uint16 token ids; {redo}")
    splits = meta.get("splits")
    if not isinstance(splits, dict) or any(
        not isinstance(splits.get(s), dict) or not isinstance(splits[s].get("tokens"), int) for s in SPLITS
    ):
        raise DatasetError(f"{meta_file} lacks the token counts of its splits; {redo}")
    return meta


def _check_sizes(folder: Path, meta: dict, redo: str) -> None:
    for split in SPLITS:
        path = bin_path(folder, split)
        size = path.stat().st_size
        if size % TOKEN_DTYPE.itemsize:
            raise DatasetError(
                f"{path} is {size:,} bytes, not a whole number of 2-byte tokens: it is truncated or not a "
                f"uint16 token file; {redo}"
            )
        expected = meta.get("splits", {}).get(split, {}).get("tokens")
        if expected is not None and size != expected * TOKEN_DTYPE.itemsize:
            raise DatasetError(
                f"{path} holds {plural(size // TOKEN_DTYPE.itemsize, 'token')} but {META_FILE} says {expected:,}: "
                f"the file is truncated or from another preparation; {redo}"
            )


def _check_ids(dataset: Dataset, redo: str) -> None:
    """Refuse token ids at or above the vocabulary size, which training would crash on whenever a batch
    happened to hold one (hours in, perhaps). Data prepared here records its largest id in meta.json; a
    folder without it (nanoGPT's, llm.c's, or a foreign file) is read once, in bounded memory."""
    vocab = int(dataset.meta.get("vocab_size", VOCAB_SIZE))
    largest = dataset.meta.get("max_id")
    if isinstance(largest, int) and largest < vocab:
        return
    for split in SPLITS:
        for piece in pieces(dataset.split(split)):
            found = first_id_at_least(piece, vocab)
            if found is not None:
                position, value = found
                raise DatasetError(
                    f"{piece.path}: token id {value:,} at position {position:,} is outside the vocabulary of "
                    f"{vocab:,} ids (0 to {vocab - 1:,}): not GPT-2 tokens in uint16, or another tokenizer's; {redo}"
                )


def first_id_at_least(tokens: TokenFile, limit: int, chunk: int = 1 << 23, quiet_seconds: float = 2.0):
    """(position, id) of the first id >= limit in `tokens`, or None. Reads 16 MB at a time into one buffer
    (bounded memory whatever the file's size), with a progress line once it has taken quiet_seconds."""
    from nanogpt2.common.progress import progress

    buffer = np.empty(min(chunk, max(len(tokens), 1)), dtype=TOKEN_DTYPE)
    start, bar = time.monotonic(), None
    with open(tokens.path, "rb") as f:
        f.seek(tokens.offset)
        for done in range(0, len(tokens), len(buffer)):
            ids = buffer[: min(len(buffer), len(tokens) - done)]
            f.readinto(ids.view(np.uint8).data)  # type: ignore[arg-type]  # an ndarray exposes its buffer
            if int(ids.max()) >= limit:
                if bar is not None:
                    bar.close()
                return done + int(np.argmax(ids >= limit)), int(ids[np.argmax(ids >= limit)])
            if bar is None and time.monotonic() - start > quiet_seconds:
                bar = progress(total=len(tokens), initial=done, desc=f"checking token ids in {tokens.path}", unit="tok")
            if bar is not None:
                bar.update(len(ids))
    if bar is not None:
        bar.close()
    return None


def _check_masks(folder: Path, meta: dict, redo: str) -> None:
    """Pair data: each split's .mask is one byte per token of its .bin, in a version this code reads, and the
    splits are whole windows."""
    info = meta["loss_mask"]
    if not isinstance(info, dict) or info.get("format") != MASK_FORMAT or not isinstance(info.get("window"), int):
        raise DatasetError(f"{folder / META_FILE} has a loss_mask entry this nanogpt2 cannot read; {redo}")
    if info.get("version", 0) > MASK_VERSION:
        raise DatasetError(
            f"{folder / META_FILE}: loss mask version {info.get('version')}; this nanogpt2 reads up to "
            f"{MASK_VERSION}: update nanogpt2 or {redo}"
        )
    for split in SPLITS:
        path, tokens = mask_path(folder, split), len(TokenFile.whole(bin_path(folder, split)))
        if not path.is_file():
            raise DatasetError(f"{folder} holds pair data (meta.json's loss_mask) but no {path.name}; {redo}")
        if path.stat().st_size != tokens:
            raise DatasetError(
                f"{path} has {plural(path.stat().st_size, 'byte')}, but {bin_path(folder, split).name} has "
                f"{plural(tokens, 'token')}: one mask byte per token is expected; {redo}"
            )
        if tokens % info["window"]:
            raise DatasetError(f"{bin_path(folder, split)} is not whole windows of {info['window']:,} tokens; {redo}")
