"""Prepare token files from any text: read, split into train/val, tokenize in parallel, write safely.

    documents (sources.py) -> split by document -> pieces (tokenize.py) -> thread pool
                           -> train/val temporary files -> checks -> rename into place -> meta.json

Memory stays bounded whatever the corpus size: inputs are read in blocks, at most
a few units of work are in flight, and finished ids are appended to the output
files at once, in input order (so the output does not depend on thread timing).

The split is decided per document, never cutting one in two: document i goes to
val when a hash of (seed, i) falls below val_fraction. A hash needs no shuffle
buffer and gives the same answer on every run and machine. Two corner cases:
with a single document (one novel, one big file) the last val_fraction of its
tokens becomes val, as nanoGPT's shakespeare recipe does; and if chance leaves a
split without documents, the last document of the other split moves over.

Nothing half-written looks valid: ids go to hidden temporary files that are
deleted on any failure (nanogpt2/common/files.py); only after every check do they replace
train.bin and val.bin, and meta.json (with the counts the loader checks) is written last.

Pair data for fine-tuning (--prompt_column with --completion_column, or --chat) takes
another road, in pairs.py: each row is one example, rendered by a template, written
with a loss mask beside the tokens and packed into windows of block_size + 1.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from nanogpt2.common.files import atomic_write, write_json_atomic
from nanogpt2.common.progress import progress
from nanogpt2.data.format import META_FILE, SPLITS, TOKEN_DTYPE, DatasetError, bin_path, gpt2_meta, mask_path
from nanogpt2.data.sources import ReadStats, documents, parse_inputs
from nanogpt2.data.tokenize import Piecer, encode_unit, numpy_encoder
from nanogpt2.errors import check_positive_int, plural

UNIT_CHARS = 1 << 18  # characters per unit of work handed to a thread: big enough to repay the hand-off


@dataclasses.dataclass
class PrepareConfig:
    """Settings of one preparation: `python data/prepare.py --help` lists them with these docstrings."""

    inputs: list[str] = dataclasses.field(default_factory=list, metadata={"flag": "input"})
    """Text files (.txt/.md), folders of them (searched recursively), .csv/.jsonl/.json/.parquet
    files, or hf:NAME[:CONFIG] for a Hugging Face dataset; several may follow one --input."""
    out: str = ""
    """Folder to write train.bin, val.bin and meta.json into (created if missing)."""
    val_fraction: float = 0.1
    """Share of documents for validation (of tokens, when the input is a single document). 0: no validation
    split (an empty val.bin): train with --eval_interval=0, or score another dataset with --eval_tasks."""
    seed: int = 0
    """Seed of the document-level train/val split: the same seed and inputs give the same files."""
    column: str = "text"
    """The text column of .csv/.jsonl/.json/.parquet inputs and Hugging Face datasets."""
    lines: bool = False
    """Treat each line of a .txt/.md file as its own document (one sample per line)."""
    workers: int = 0
    """Tokenizer threads; 0 means one per CPU core."""
    block_size: int = 1024
    """Refuse a split shorter than one training window of this many tokens (+1 for the shifted target). Pair
    data is packed into windows of exactly block_size + 1 tokens: train it with the same block_size."""
    hf_split: str = dataclasses.field(default="train", metadata={"flag": "split"})
    """Which split of a Hugging Face dataset (hf:NAME) to read."""
    streaming: str = "auto"
    """Stream Hugging Face datasets: auto (stream unless known to be under 1 GB), yes or no."""
    prompt_column: str = ""
    """The prompt column of pair data for fine-tuning (.csv, .jsonl, .json, .parquet or hf:NAME); set it with
    --completion_column, and each row is one prompt/answer example: only the answer is trained, through a
    loss mask written beside the tokens (train.mask, val.mask). Empty: plain text."""
    completion_column: str = "completion"
    """The answer column of pair data (with --prompt_column): its tokens and the end-of-text after them are trained."""
    chat: bool = False
    """Pair data of conversations: each row's --messages_column holds a list of {"role": "system", "user" or
    "assistant", "content": text}, with a user turn, ending with the assistant's; only the assistant is trained."""
    messages_column: str = "messages"
    """The conversation column of --chat data (a list of messages, or that list as JSON text in a CSV cell)."""
    template: str = "chat"
    """How a pair becomes text: chat ("User: PROMPT\\nAssistant: ANSWER", turns as GPT-2 saw them in web text) or
    plain (prompt and answer back to back, as they are). The end-of-text after the answer is trained either way."""
    too_long: str = "truncate"
    """A pair example longer than one window of block_size + 1 tokens: truncate (keep its first block_size + 1
    tokens; left out if its prompt alone fills them) or refuse (an error naming the row)."""
    llmc: bool = False
    """Also write the splits as llm.c's token shards into OUT/llmc/ (NAME_val_000000.bin, NAME_train_000000.bin,
    ...: a 256-int32 header, then uint16 ids), for llm.c and modded-nanogpt. Such a folder opens here too."""
    llmc_shard_tokens: int = 100_000_000
    """Tokens per llm.c shard (llm.c's own scripts write 10**8)."""
    quiet: bool = False
    """No progress bar and no summary line."""

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):
            self.inputs = [self.inputs]
        if not self.inputs:
            raise DatasetError("no input given: pass --input with text files, folders, tables or hf:NAME")
        if not self.out:
            raise DatasetError("no output folder given: pass --out, e.g. --out data/mine")
        if not 0.0 <= self.val_fraction < 1.0:  # `not` also refuses NaN
            raise DatasetError(
                f"val_fraction={self.val_fraction}: must be between 0 and 1 (e.g. 0.1; 0 keeps no validation split)"
            )
        if self.workers < 0:
            raise DatasetError(f"workers={self.workers}: must be 0 (all cores) or more")
        check_positive_int("block_size", self.block_size)
        if self.streaming not in ("auto", "yes", "no"):
            raise DatasetError(f"streaming={self.streaming!r}: choose auto, yes or no")
        if not self.column:
            raise DatasetError("column is empty: name the column that holds the text (e.g. --column text)")
        check_positive_int("llmc_shard_tokens", self.llmc_shard_tokens)
        if self.llmc and self.pairs:
            raise DatasetError("llmc=True with pair data: llm.c's shards hold no loss mask; drop --llmc")
        self._check_pairs()

    def _check_pairs(self) -> None:
        from nanogpt2.data.pairs import TEMPLATES, TOO_LONG  # the templates' one home (it imports this module)

        if self.template not in TEMPLATES:
            raise DatasetError(f"template={self.template!r}: choose {' or '.join(TEMPLATES)}")
        if self.too_long not in TOO_LONG:
            raise DatasetError(f"too_long={self.too_long!r}: choose {' or '.join(TOO_LONG)}")
        if self.prompt_column and self.chat:
            raise DatasetError(
                "prompt_column and chat are both set: give --prompt_column (with --completion_column) for "
                "prompt/answer pairs, or --chat (with --messages_column) for conversations"
            )
        if self.prompt_column and not self.completion_column:
            raise DatasetError("completion_column is empty: name the column that holds the answers")
        if self.chat and not self.messages_column:
            raise DatasetError("messages_column is empty: name the column that holds the conversations")
        if self.chat and self.template == "plain":
            raise DatasetError("template=plain has no turns to render a conversation (--chat): use --template=chat")

    @property
    def pairs(self) -> bool:
        """Pair mode: one prompt/answer example per row (pairs.py), not plain text."""
        return bool(self.prompt_column) or self.chat


def goes_to_val(seed: int, index: int, val_fraction: float) -> bool:
    """The split of document `index`: a 64-bit BLAKE2 hash of (seed, index), compared to the fraction."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < val_fraction * 2.0**64


def prepare(cfg: PrepareConfig, say: Callable[[str], None] = print) -> dict:
    """Write cfg.out/{train.bin, val.bin, meta.json} from cfg.inputs and return the meta.json contents.
    Pair data (cfg.pairs) also gets train.mask and val.mask: see pairs.py."""
    if cfg.pairs:
        from nanogpt2.data.pairs_prepare import prepare_pairs

        return prepare_pairs(cfg, say)
    sources = parse_inputs(
        cfg.inputs,
        lines=cfg.lines,
        column=cfg.column,
        hf_split=cfg.hf_split,
        streaming=cfg.streaming,
        say=(lambda line: None) if cfg.quiet else say,
    )
    encode = numpy_encoder()  # fails here, before any work, if the tokenizer cannot load
    with output_folder(cfg) as out:
        with contextlib.ExitStack() as stack:  # on leaving without an error, both files replace the old ones
            files = [stack.enter_context(atomic_write(bin_path(out, s), "w+b")) for s in SPLITS]
            t0 = time.perf_counter()
            stats, counts, last_doc, max_id = _tokenize_all(cfg, sources, encode, files)
            seconds = time.perf_counter() - t0
            mode = _balance(cfg, files, counts, last_doc)
            _check_block(cfg, counts)
        # New .bin files first, meta.json last: if the run dies in between, the old meta.json's
        # token counts no longer match the files and open_dataset refuses the folder loudly
        # (without any meta.json it would be read as a nanoGPT-style folder and accepted).
        meta = gpt2_meta(
            {s: {"tokens": counts[i][0], "documents": counts[i][1]} for i, s in enumerate(SPLITS)},
            max_id=max_id,  # over both splits (moving a document's tail between them changes no id)
            sources=[s.description for s in sources],
            split=mode,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            lines=cfg.lines,
            column=cfg.column,
            skipped_empty_documents=stats.skipped_empty,
            undecodable_bytes=stats.undecodable_bytes,
            created=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        )
        write_json_atomic(out / META_FILE, meta)
        for split in SPLITS:  # loss masks of an earlier preparation of pair data no longer match the tokens
            mask_path(out, split).unlink(missing_ok=True)
    if not cfg.quiet:
        _summary(say, out, meta, stats, seconds)
    if cfg.llmc:
        from nanogpt2.data.llmc import write_shards

        shards = write_shards(out, out / "llmc", cfg.llmc_shard_tokens)
        if not cfg.quiet:
            say(f"llm.c shards: {len(shards)} files in {out / 'llmc'} (train on them with --dataset={out / 'llmc'})")
    return meta


@contextlib.contextmanager
def output_folder(cfg: PrepareConfig) -> Iterator[Path]:
    """cfg.out, created if missing, for the block that writes the dataset into it. If the block fails, a folder
    created here is removed again when empty, and an OSError (a full disk) becomes a one-line DatasetError."""
    out = Path(cfg.out).expanduser()
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out} is a file; name a folder")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a path through a file, no permission, a read-only disk
        raise DatasetError(f"--out {out} cannot be created: {e.strerror or e}; name another folder") from None
    try:
        yield out
    except BaseException as e:
        if created and not any(out.iterdir()):
            out.rmdir()  # leave no empty dataset folder behind either
        if isinstance(e, OSError):  # a full disk, a disk gone read-only: the old files (if any) are untouched
            raise DatasetError(
                f"could not write the dataset to {out}: {e.strerror or e}; any files from an "
                f"earlier preparation are intact. Free some space or name another --out"
            ) from None
        raise


class _Output:
    """Writes to the two split files, and keeps the counts the split checks need."""

    def __init__(self, files: list[IO[bytes]]) -> None:
        self.files = files
        self.counts = [[0, 0], [0, 0]]  # [tokens, documents] of train and val
        self.last_doc = [0, 0]  # tokens of the last whole document of each split (end-of-text included)
        self._current = [0, 0]  # tokens so far of the document being written, per split
        self.max_id = -1  # the largest id written, for meta.json (the loader checks it against the vocabulary)

    def write(self, arrays, items, lengths) -> None:
        for split in (0, 1):
            if len(arrays[split]):
                self.files[split].write(arrays[split].astype(TOKEN_DTYPE, copy=False).data)
                self.counts[split][0] += len(arrays[split])
                self.max_id = max(self.max_id, int(arrays[split].max()))
        for (_, ends, split), n in zip(items, lengths):
            self._current[split] += n
            if ends:
                self.last_doc[split], self._current[split] = self._current[split], 0
                self.counts[split][1] += 1


def _tokenize_all(cfg: PrepareConfig, sources, encode, files: list[IO[bytes]]):
    """Stream every document through the thread pool into the two split files.

    Returns (read stats, [[tokens, documents] per split], [tokens of the last whole document per split],
    the largest id written).
    """
    workers = cfg.workers or os.cpu_count() or 1
    stats, output = ReadStats(), _Output(files)
    in_flight: collections.deque = collections.deque()  # (future, its items), oldest first
    total = None if any(s.size_bytes is None for s in sources) else sum(s.size_bytes for s in sources)
    bar = None  # started with the first unit of work, so that an input refused at once prints just the error

    def submit(pool, unit) -> None:
        nonlocal bar
        if bar is None:
            bar = progress(
                total=total,
                desc=f"tokenizing into {cfg.out}",
                unit="B",
                disable=cfg.quiet,
                unit_scale=True,
                unit_divisor=1024,
            )
        in_flight.append((pool.submit(encode_unit, encode, unit), unit))

    def drain(keep: int) -> None:
        """Write finished units in input order (so thread timing cannot change the files) until `keep` are left."""
        while len(in_flight) > keep:
            future, items = in_flight.popleft()
            arrays, lengths = future.result()
            output.write(arrays, items, lengths)
            assert bar is not None  # started with the first unit
            bar.update(stats.bytes_read - bar.n)
            bar.set_postfix_str(f"{output.counts[0][0] + output.counts[1][0]:,} tokens", refresh=False)

    try:
        with ThreadPoolExecutor(workers) as pool:
            unit: list[tuple[str, bool, int]] = []  # (text, ends_document, split)
            unit_chars, index, split, piecer = 0, 0, None, Piecer()
            for source in sources:
                for text, ends in documents(source, stats):
                    if split is None:  # the first piece of a document decides its split
                        split = int(goes_to_val(cfg.seed, index, cfg.val_fraction))
                        index += 1
                    pieces = piecer.feed(text, ends)
                    unit += [(piece, ends and k == len(pieces) - 1, split) for k, piece in enumerate(pieces)]
                    unit_chars += sum(map(len, pieces))
                    if ends:
                        split = None
                    if unit_chars >= UNIT_CHARS:
                        submit(pool, unit)
                        unit, unit_chars = [], 0
                        drain(keep=2 * workers)  # bounded memory: at most two units per thread in flight
            if unit:
                submit(pool, unit)
            drain(keep=0)
    except BaseException as e:
        if bar is not None:  # closed as failed: no "done in" line above the error
            bar.__exit__(type(e), e, e.__traceback__)
            bar = None
        raise
    finally:
        if bar is not None:
            bar.close()
    return stats, output.counts, output.last_doc, output.max_id


def _balance(cfg: PrepareConfig, files: list[IO[bytes]], counts, last_doc) -> str:
    """Make sure both splits have text (val none when val_fraction is 0), and say how the split was made."""
    if cfg.val_fraction == 0:
        return "none: val_fraction=0, every document is train"
    if counts[0][1] + counts[1][1] == 1:
        # One document: its last val_fraction of tokens is val (end-of-text stays with the tail).
        if counts[1][0]:  # it landed in val: move it to train first
            _move_tail(files[1], files[0], 0, counts, src=1)
        body = counts[0][0] - 1
        cut = min(max(round(body * (1 - cfg.val_fraction)), 1), max(body, 1))
        _move_tail(files[0], files[1], cut, counts, src=0)
        counts[0][1], counts[1][1] = 0, 1
        return f"single document: the last {cfg.val_fraction:g} of its tokens is val"
    for empty, full in ((1, 0), (0, 1)):
        if counts[empty][1] == 0:  # chance sent every document to one split: move the last one over
            _move_tail(files[full], files[empty], counts[full][0] - last_doc[full], counts, src=full)
            counts[full][1] -= 1
            counts[empty][1] += 1
    return f"by document: BLAKE2 hash of (seed, document index) < val_fraction={cfg.val_fraction:g}"


def _move_tail(src_file: IO[bytes], dst_file: IO[bytes], start: int, counts, src: int) -> None:
    """Append the ids of src_file from token `start` on to dst_file and cut them from src_file.
    Both files are left positioned at their end, ready for more ids."""
    cut = start * TOKEN_DTYPE.itemsize
    dst_file.seek(0, os.SEEK_END)
    src_file.seek(cut)
    shutil.copyfileobj(src_file, dst_file, 1 << 20)
    src_file.truncate(cut)
    src_file.seek(cut)
    moved = counts[src][0] - start
    counts[src][0] -= moved
    counts[1 - src][0] += moved


def _check_block(cfg: PrepareConfig, counts) -> None:
    need = cfg.block_size + 1  # a window of block_size inputs plus the target after the last one
    for i, split in enumerate(SPLITS):
        if counts[i][0] < need and not (split == "val" and cfg.val_fraction == 0):
            raise DatasetError(
                f"the {split} split has {plural(counts[i][0], 'token')}, fewer than the {need:,} that one window of "
                f"block_size={cfg.block_size} needs: give more text, a larger --val_fraction, or a smaller "
                f"--block_size (and train with that block_size)"
            )


def _summary(say, out: Path, meta: dict, stats: ReadStats, seconds: float) -> None:
    tr, va = meta["splits"]["train"], meta["splits"]["val"]
    tokens = tr["tokens"] + va["tokens"]
    rate = f"{tokens / seconds / 1e6:.2f}M tokens/s, {stats.bytes_read / seconds / 1e6:.1f} MB/s" if seconds else ""

    def docs(n: int, tokens: int) -> str:
        # A single document too big to give whole to one split is cut in two: say so, not "0 documents".
        return f"{n:,} document{'' if n == 1 else 's'}" if n or not tokens else "part of a document"

    say(
        f"wrote {out}: train {plural(tr['tokens'], 'token')} ({docs(tr['documents'], tr['tokens'])}), val "
        f"{plural(va['tokens'], 'token')} ({docs(va['documents'], va['tokens'])}) from "
        f"{stats.bytes_read / 1e6:,.1f} MB of text in {seconds:.1f}s ({rate})"
    )
    if not va["tokens"]:
        say(
            "no validation split (val_fraction=0): train with --eval_interval=0 (no evaluation), or score "
            "held-out text with --eval_tasks=perplexity:PATH"
        )
    share = va["tokens"] / tokens
    if share > 0.5 or share > 3 * meta["val_fraction"]:  # whole documents drawn at random: a big one can tip it
        say(
            f"warning: the val split holds {share:.0%} of the tokens, for val_fraction={meta['val_fraction']:g} of "
            f"the documents: one large document went to val. Try another --seed, or cut big files into "
            f"documents (--lines, or several files)"
        )
    if stats.skipped_empty:
        say(f"skipped {plural(stats.skipped_empty, 'empty or whitespace-only document')}")
    if stats.undecodable_bytes:
        say(
            f"warning: {stats.undecodable_bytes:,} bytes were not valid UTF-8 and became U+FFFD, in "
            f"{', '.join(stats.undecodable_files)}{' and others' if len(stats.undecodable_files) >= 5 else ''}; "
            f"re-save those files as UTF-8 to keep every character"
        )
