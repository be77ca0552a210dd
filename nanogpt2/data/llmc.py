"""llm.c's token shards: a folder of them opens as a dataset, one stream per split, and prepare can write them.

llm.c (Karpathy, its dev/data scripts) and modded-nanogpt keep GPT-2 tokens in shards: a header of
256 little-endian int32 (the magic 20240520, the version 1, the number of tokens, then zeros), then
the ids as uint16. The scripts name them like fineweb_val_000000.bin and fineweb_train_000001.bin, and
FineWeb's GPT-2 tokens are shared in this form. So in a folder without train.bin and val.bin:

    *train*.bin   the train split: these shards in name order, read as one run of ids
    *val*.bin     the val split, the same way

A window may run from one shard into the next, as it would across documents in one file. Each header
is checked when the folder is opened (magic, version, count against the file's size, one line each
when wrong), and so are the ids, as for any folder without meta.json.

A train.bin or val.bin (nanoGPT's names) is read as a shard only when its header is whole: the magic,
version 1 and a count that matches the size; a folder with our meta.json is never header-checked. A
headerless file whose first bytes spell the magic is not read past a header: as uint16 ids the magic
is 55432 then 308, and the first is outside GPT-2's vocabulary, so the id check refuses the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from nanogpt2.data.format import SPLITS, TOKEN_DTYPE, Dataset, DatasetError, TokenFile, TokenStream, gpt2_meta

MAGIC, VERSION = 20240520, 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
SHARD_TOKENS = 100_000_000  # llm.c's fineweb.py writes shards of 10**8 tokens


def read_header(path: Path, *, required: bool) -> int | None:
    """The token count of the llm.c shard `path`, or None when it has no llm.c header. A header that is
    there but wrong raises a one-line DatasetError; so does a missing one when `required` (a shard name)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = np.frombuffer(f.read(HEADER_BYTES), dtype="<i4")
    magic = int(head[0]) if len(head) else None
    if magic != MAGIC:
        if required:
            raise DatasetError(
                f"{path} is not an llm.c shard: its first int32 is {magic}, not llm.c's magic {MAGIC}; "
                f"remove it from the folder, or prepare the text with data/prepare.py"
            )
        return None
    version = int(head[1]) if len(head) > 1 else None
    if version != VERSION:
        if required:
            raise DatasetError(
                f"{path} has llm.c's magic but version {version}; nanogpt2 reads version {VERSION} "
                f"(uint16 GPT-2 ids): write the shards again with llm.c's dev/data scripts"
            )
        return None  # a train.bin of plain ids that happens to start like the magic
    count = int(head[2]) if len(head) > 2 else -1
    if len(head) < HEADER_INTS or size != HEADER_BYTES + count * TOKEN_DTYPE.itemsize:
        have = max(0, size - HEADER_BYTES) // TOKEN_DTYPE.itemsize
        raise DatasetError(
            f"{path}: its llm.c header says {count:,} tokens but the file holds {have:,} after the header: "
            f"it is truncated or was written wrongly; copy or write it again"
        )
    return count


def find_shards(folder: Path) -> dict[str, list[Path]] | None:
    """{"train": [...], "val": [...]}: the folder's llm.c shards per split in name order, or None when it has none."""
    if (folder / "train.bin").is_file() and (folder / "val.bin").is_file():
        named = {s: [folder / f"{s}.bin"] for s in SPLITS}  # nanoGPT's names: shards only if the headers are whole
        return named if all(read_header(p[0], required=False) is not None for p in named.values()) else None
    bins = sorted(p for p in folder.glob("*.bin") if p.is_file() and p.stem not in SPLITS)
    found = {s: [p for p in bins if re.search(s, p.stem)] for s in SPLITS}
    if not any(found.values()):
        return None
    for split, paths in found.items():
        if not paths:
            raise DatasetError(
                f"{folder} has llm.c-style {'train' if split == 'val' else 'val'} shards but no *{split}*.bin; "
                f"add one (llm.c's scripts write NAME_val_000000.bin), or prepare the text with data/prepare.py"
            )
    both = set(found["train"]) & set(found["val"])
    if both:
        raise DatasetError(f"{sorted(both)[0]} names both train and val; rename it so that its split is clear")
    return found


def open_shards(folder: Path, shards: dict[str, list[Path]]) -> ShardedDataset:
    """The dataset of a folder of llm.c shards, each header validated (the ids are checked by the caller)."""
    streams = {}
    for split, paths in shards.items():
        sizes = [read_header(p, required=True) or 0 for p in paths]  # required: an int, or it raised
        streams[split] = TokenStream(tuple(TokenFile(p, HEADER_BYTES, n) for p, n in zip(paths, sizes)))
    counts = {s: {"tokens": len(streams[s]), "documents": None} for s in SPLITS}
    meta = gpt2_meta(counts, origin="llm.c token shards", shards={s: [p.name for p in shards[s]] for s in SPLITS})
    return ShardedDataset(folder, meta, streams)


class ShardedDataset(Dataset):
    """A Dataset whose splits are llm.c shards: split() gives a TokenStream of them."""

    def __init__(self, path: Path, meta: dict, streams: dict[str, TokenStream]) -> None:
        super().__init__(path, meta)
        self.streams = streams

    def split(self, name: str) -> TokenStream:  # type: ignore[override]  # a stream reads like a TokenFile
        return self.streams[self._check(name)]

    def mask(self, name: str) -> None:
        return None  # llm.c's format has no loss masks: plain text only


def write_shards(folder: Path, out: Path, shard_tokens: int = SHARD_TOKENS) -> list[Path]:
    """Write the prepared dataset `folder`'s splits as llm.c shards into `out` (NAME_val_000000.bin,
    NAME_train_000000.bin, ...; NAME is the folder's name), each file written whole or not at all.
    Shards of an earlier, longer preparation with the same names are removed. Returns the paths."""
    from nanogpt2.common.files import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for split in SPLITS:
        ids = TokenFile.whole(folder / f"{split}.bin").array()
        starts = range(0, max(len(ids), 1), shard_tokens)  # an empty split still gets one (empty) shard
        for index, start in enumerate(starts):
            piece = np.asarray(ids[start : start + shard_tokens], dtype=TOKEN_DTYPE)
            header = np.zeros(HEADER_INTS, dtype="<i4")
            header[:3] = (MAGIC, VERSION, len(piece))
            path = out / f"{folder.name}_{split}_{index:06d}.bin"
            with atomic_write(path) as f:
                f.write(header.tobytes())
                f.write(piece.tobytes())
            written.append(path)
        for stale in out.glob(f"{folder.name}_{split}_*.bin"):
            if stale not in written:
                stale.unlink()
    return written
