"""Where documents come from: text files, folders, CSV, JSON/Parquet and Hugging Face datasets.

Every input becomes a stream of *pieces* `(text, ends_document)`. A short
document is one piece; a big text file arrives in blocks of a few MB, so that
a 40 GB file never has to fit in memory. The preparer (pipeline.py) decides
which split each document goes to and tokenizes the pieces.

What counts as a document:

* a `.txt`/`.md` file is one document, or, with `lines=True`, each line is one
  (the line without its "\\n" or "\\r\\n"), as in fine-tuning guides that keep one
  sample per line;
* a folder is every `.txt`/`.md` file under it, recursively, in sorted order;
* a `.csv` row, a `.jsonl`/`.json` record or a `.parquet` row is one document:
  its `text` column (or the one named);
* `hf:NAME` or `hf:NAME:CONFIG` is a Hugging Face dataset, one row per document.

Text is read as UTF-8 (a leading byte-order mark is dropped). Undecodable bytes
become U+FFFD and are counted, so the summary can say how many there were. A
file with NUL bytes is refused as binary. Documents that are empty or only
whitespace are skipped and counted; an input that has no text at all is an error.
"""

from __future__ import annotations

import codecs
import collections
import csv
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from nanogpt2.common.network import reachable
from nanogpt2.data.format import DatasetError

TEXT_SUFFIXES = (".txt", ".md")
TABLE_SUFFIXES = (".jsonl", ".json", ".parquet")
BLOCK_BYTES = 4 << 20  # a big text file is read 4 MB at a time

Piece = tuple[str, bool]  # (text, ends_document)


@dataclasses.dataclass
class ReadStats:
    """What the readers saw, for the summary and meta.json."""

    bytes_read: int = 0
    """UTF-8 bytes of input text read so far (drives the progress bar and the MB/s figure)."""
    undecodable_bytes: int = 0
    """Bytes that were not valid UTF-8 and became U+FFFD."""
    undecodable_files: list = dataclasses.field(default_factory=list)
    """The first few inputs that had undecodable bytes."""
    skipped_empty: int = 0
    """Documents skipped because they were empty or only whitespace."""


# Counting replacement: a codec error handler that substitutes U+FFFD like errors="replace"
# and adds the number of bad bytes to a counter. Reading happens on one thread, so a reader
# takes the counter's difference around each decode.
_bad_bytes = [0]


def _count_and_replace(err: UnicodeDecodeError):
    _bad_bytes[0] += err.end - err.start
    return "\ufffd", err.end


codecs.register_error("nanogpt2-count-replace", _count_and_replace)  # type: ignore[arg-type]  # decode errors only


class Source:
    """One input. `pieces()` yields its documents as (text, ends_document) pieces."""

    description: str = ""
    size_bytes: int | None = None  # for the progress bar's total, when known up front

    def pieces(self, stats: ReadStats) -> Iterator[Piece]:
        raise NotImplementedError


def parse_inputs(
    specs: list[str],
    *,
    lines: bool = False,
    column: str = "text",
    hf_split: str = "train",
    streaming: str = "auto",
    say: Callable[[str], None] = print,
) -> list[Source]:
    """Turn command-line inputs into Sources, checking up front that every one exists and is supported.
    An input given twice, or inside a folder also given, is read once, and `say` tells which."""
    if not specs:
        raise DatasetError(
            "no input given: pass --input with text files, folders, .csv/.jsonl/.json/.parquet files or hf:DATASET_NAME"
        )
    sources: list[Source] = []
    for spec in _read_once(specs, say):
        if spec.startswith("hf:"):
            name, _, config = spec[3:].partition(":")
            if not name:
                raise DatasetError(f"{spec!r}: write a Hugging Face dataset as hf:NAME or hf:NAME:CONFIG")
            sources.append(HubDataset(name, config or None, hf_split, column, streaming))
            continue
        path = Path(spec).expanduser()
        if not path.exists():
            raise DatasetError(
                f"input {path} does not exist; check the path (Hugging Face datasets are written hf:NAME)"
            )
        if path.is_file() and path.stat().st_size == 0:
            raise DatasetError(f"input {path} has no text: it is empty (0 bytes); give a file with text in it")
        if path.is_dir():
            sources.append(TextFolder(path, lines))
        elif path.suffix.lower() in TEXT_SUFFIXES:
            sources.append(TextFile(path, lines))
        elif path.suffix.lower() == ".csv":
            sources.append(CsvFile(path, column))
        elif path.suffix.lower() in TABLE_SUFFIXES:
            sources.append(TableFile(path, column))
        else:
            raise DatasetError(
                f"input {path}: unsupported file type {path.suffix or '(no suffix)'!r}; give .txt/.md, .csv, "
                f".jsonl/.json or .parquet files, folders of .txt/.md files, or hf:DATASET_NAME"
            )
    return sources


def _read_once(specs: list[str], say: Callable[[str], None]) -> list[str]:
    """specs without repeats: the same path (or dataset) again, or a path inside a folder also given,
    would make the same documents twice, with nothing to show for it but twice the tokens."""

    def key(spec: str) -> str:
        return spec if spec.startswith("hf:") else str(Path(spec).expanduser().resolve())

    folders = {key(s): s for s in specs if not s.startswith("hf:") and Path(s).expanduser().is_dir()}
    times = collections.Counter(key(s) for s in specs)
    kept, seen = [], set()
    for spec in specs:
        k = key(spec)
        outer = next((folders[f] for f in folders if f != k and Path(f) in Path(k).parents), None)
        if outer is not None:
            say(f"note: {spec} is inside {outer}, also given: reading it once")
        elif k not in seen:
            seen.add(k)
            kept.append(spec)
            if times[k] > 1:
                say(f"note: {spec} was given {times[k]} times: reading it once")
    return kept


def documents(source: Source, stats: ReadStats) -> Iterator[Piece]:
    """The source's pieces without empty or whitespace-only documents; an error if nothing is left."""
    found = False
    held: list[str] | None = []  # the current document's pieces while they are all whitespace; None once it has text
    for text, ends in source.pieces(stats):
        if held is not None and text.strip():
            for h in held:
                yield h, False
            held = None
        if held is None:
            yield text, ends
        else:
            held.append(text)
        if ends:
            if held is None:
                found = True
            else:
                stats.skipped_empty += 1
            held = []
    if not found:
        raise DatasetError(
            f"{source.description} has no text (it is empty or only whitespace); give an input with text in it"
        )


# -- text files -------------------------------------------------------------------


class TextFile(Source):
    def __init__(self, path: Path, lines: bool) -> None:
        self.path, self.lines = path, lines
        self.description = f"{path}" + (" (one document per line)" if lines else "")
        self.size_bytes = path.stat().st_size

    def pieces(self, stats: ReadStats) -> Iterator[Piece]:
        blocks = _decoded_blocks(self.path, stats)
        return _lines(blocks) if self.lines else _whole(blocks)


class TextFolder(Source):
    def __init__(self, path: Path, lines: bool) -> None:
        self.path, self.lines = path, lines

        def visible(p: Path) -> bool:  # skip .git/, .cache/ and other hidden files and folders
            return not any(part.startswith(".") for part in p.relative_to(path).parts)

        self.files = sorted(
            p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES and p.is_file() and visible(p)
        )
        if not self.files:
            raise DatasetError(f"folder {path} has no .txt or .md files; put text files in it or give the files")
        self.description = f"{path} ({len(self.files)} files" + (", one document per line)" if lines else ")")
        self.size_bytes = sum(p.stat().st_size for p in self.files)

    def pieces(self, stats: ReadStats) -> Iterator[Piece]:
        for file in self.files:
            blocks = _decoded_blocks(file, stats)
            yield from (_lines(blocks) if self.lines else _whole(blocks))


def _decoded_blocks(path: Path, stats: ReadStats) -> Iterator[str]:
    """The file's text in blocks of about BLOCK_BYTES, decoded incrementally (a character cut
    between blocks is completed by the next one). Refuses files with NUL bytes as binary."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="nanogpt2-count-replace")
    before = _bad_bytes[0]
    with open(path, "rb") as f:
        while True:
            raw = f.read(BLOCK_BYTES)
            if b"\x00" in raw:
                raise DatasetError(
                    f"{path} looks like a binary file (it contains NUL bytes); give UTF-8 text "
                    f"(re-save UTF-16 text as UTF-8)"
                )
            stats.bytes_read += len(raw)
            text = decoder.decode(raw, final=not raw)
            if text:
                yield text
            if not raw:
                break
    _note_undecodable(stats, path, _bad_bytes[0] - before)


def _note_undecodable(stats: ReadStats, where, bad: int) -> None:
    if bad:
        stats.undecodable_bytes += bad
        if len(stats.undecodable_files) < 5:
            stats.undecodable_files.append(str(where))


def _whole(blocks: Iterator[str]) -> Iterator[Piece]:
    """A whole file as one document, in pieces."""
    pending = None
    for block in blocks:
        if pending is not None:
            yield pending, False
        pending = block
    yield (pending or ""), True


def _lines(blocks: Iterator[str]) -> Iterator[Piece]:
    """One document per line. A line longer than a block comes out in several pieces."""
    carry = ""
    for block in blocks:
        parts = (carry + block).split("\n")
        carry = parts.pop()
        for line in parts:
            yield line.removesuffix("\r"), True
        if len(carry) > BLOCK_BYTES:  # a very long line: pass its start on now, keep a short tail
            head, carry = carry[:-1], carry[-1:]  # keep one char so a trailing "\r" is judged later
            yield head, False
    if carry:
        yield carry.removesuffix("\r"), True


# -- tables ------------------------------------------------------------------------


class CsvFile(Source):
    def __init__(self, path: Path, column: str) -> None:
        self.path, self.column = path, column
        self.description = f"{path} (column {column!r})"
        self.size_bytes = path.stat().st_size

    def pieces(self, stats: ReadStats) -> Iterator[Piece]:
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # documents may be long
        before = _bad_bytes[0]
        with open(self.path, encoding="utf-8-sig", errors="nanogpt2-count-replace", newline="") as f:
            reader = csv.reader(f)
            try:
                header = next(reader, None)
                if header is None:
                    raise DatasetError(
                        f"{self.path} is empty; give a CSV file with a header row and a {self.column!r} column"
                    )
                if self.column not in header:
                    raise DatasetError(
                        f"{self.path} has no column {self.column!r} (its columns: "
                        f"{', '.join(map(repr, header))}); name the text column with --column"
                    )
                index = header.index(self.column)
                for row in reader:
                    text = row[index] if index < len(row) else ""
                    stats.bytes_read += len(text.encode("utf-8", "surrogatepass"))
                    yield text, True
            except csv.Error as e:
                raise DatasetError(
                    f"{self.path}, line {reader.line_num}: not valid CSV ({e}); give a UTF-8 CSV file"
                ) from None
        _note_undecodable(stats, self.path, _bad_bytes[0] - before)


class TableFile(Source):
    """.jsonl/.json/.parquet through Hugging Face `datasets`, streamed (memory stays bounded)."""

    def __init__(self, path: Path, column: str) -> None:
        self.path, self.column = path, column
        self.description = f"{path} (column {column!r})"
        self.size_bytes = path.stat().st_size if path.suffix.lower() != ".parquet" else None

    def pieces(self, stats: ReadStats) -> Iterator[Piece]:
        datasets = _import_datasets(self.path.name)
        builder = "parquet" if self.path.suffix.lower() == ".parquet" else "json"

        def load():
            return datasets.load_dataset(builder, data_files=str(self.path), split="train", streaming=True)

        return _rows(load, self.column, str(self.path), stats)


class HubDataset(Source):
    """A dataset on the Hugging Face Hub (or a local dataset folder that `datasets` understands)."""

    def __init__(self, name: str, config: str | None, split: str, column: str, streaming: str) -> None:
        self.name, self.config, self.split, self.column, self.streaming = name, config, split, column, streaming
        self.description = f"hf:{name}" + (f":{config}" if config else "") + f" split {split!r} (column {column!r})"

    def pieces(self, stats: ReadStats) -> Iterator[Piece]:
        offline = _offline_unless_reachable()  # before `datasets` reads its settings
        datasets = _import_datasets(f"hf:{self.name}")
        if offline:
            datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True

        def load():
            auto = self.streaming == "auto" and not offline  # offline, only a cached copy can be read
            stream = self.streaming == "yes" or (auto and _is_large(datasets, self.name, self.config))
            return datasets.load_dataset(self.name, self.config, split=self.split, streaming=stream)

        where = f"hf:{self.name} (split {self.split!r})"
        if offline:
            where += (
                " from the local cache only: the Hugging Face Hub is unreachable (offline? prepare from local "
                "files instead, e.g. --input data.jsonl)"
            )
        return _rows(load, self.column, where, stats)


def _offline_unless_reachable() -> bool:
    """True when the Hub is off limits (HF_HUB_OFFLINE) or does not answer within seconds: then only the
    local cache is read, at once, instead of after half a minute of retries (nanogpt2/common/network.py)."""
    if any(os.environ.get(name, "0") not in ("", "0") for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    from huggingface_hub import constants

    if reachable(constants.ENDPOINT):
        return False
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    return True


def _is_large(datasets, name: str, config: str | None, limit: int = 1 << 30) -> bool:
    """Stream unless the dataset says it is under 1 GB: streaming reads it once without
    keeping a copy in the Hugging Face cache; small ones are downloaded and cached."""
    try:
        info = datasets.load_dataset_builder(name, config).info
    except Exception:  # no size known: stream, the choice that is safe for any size
        return True
    size = info.dataset_size or info.download_size
    return size is None or size > limit


def _rows(load, column: str, where: str, stats: ReadStats) -> Iterator[Piece]:
    """Documents from a `datasets` table: the `column` value of each row."""
    try:
        for i, row in enumerate(load()):
            if i == 0 and column not in row:
                raise DatasetError(
                    f"{where} has no column {column!r} (its columns: {', '.join(map(repr, row))}); "
                    f"name the text column with --column"
                )
            text = row[column]
            if text is None:
                text = ""
            if not isinstance(text, str):
                raise DatasetError(
                    f"{where}, row {i + 1}: column {column!r} holds {type(text).__name__}, not text; "
                    f"name a text column with --column"
                )
            stats.bytes_read += len(text.encode("utf-8", "surrogatepass"))
            yield text, True
    except DatasetError:
        raise
    except Exception as e:  # datasets/pyarrow/network errors: one line, not a 60-line traceback
        first = (str(e).strip().splitlines() or [""])[0][:300] or "no rows could be read (an empty or cut-off file?)"
        raise DatasetError(f"cannot read {where}: {type(e).__name__}: {first}") from None


def _import_datasets(what: str):
    try:
        import datasets
    except ImportError:
        raise DatasetError(f"reading {what} needs the `datasets` package: pip install 'nanogpt2[data]'") from None
    datasets.logging.set_verbosity_error()
    return datasets
