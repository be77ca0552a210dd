"""Prompt/answer pairs for fine-tuning: read each row of a table, render it as text, mark what is trained.

    python data/prepare.py --input qa.jsonl --prompt_column question --completion_column answer --out data/qa
    python data/prepare.py --input chats.parquet --chat --out data/chats

Fine-tuning on pairs (question and answer, instruction and response, chat turns)
should teach the model to answer, not to write questions: only the answer's tokens
count in the loss. So beside train.bin and val.bin this writes train.mask and
val.mask, one byte per token:

    bit 0 (1)  TARGET_BIT         this token is a target: the loss of predicting it counts
    bit 1 (2)  EXAMPLE_START_BIT  this token starts an example: attention and positions restart here

Why this template. GPT-2 has no chat template and no special tokens for turns.
Adding some would grow its 50,257-row embedding, and the result would no longer
load as `gpt2` anywhere else. What its web text holds of dialogue is plain
`Role: text` lines (interviews, forums, scripts), so `chat` renders a pair as

    User: {prompt}\\nAssistant: {answer}<|endoftext|>

with `User: ...\\nAssistant:` untrained and ` {answer}` plus <|endoftext|> trained.
The end-of-text id GPT-2 already knows marks the end of the answer, so the model
learns to stop. It must be a target: a common pitfall sets the pad token to EOS,
and the collator then masks every EOS as padding, so the model never learns to
stop (transformers issue #23530, trl issue #976). Here EOT is always trained,
and padding is told apart by the mask, not by its id. `plain` puts the prompt and
the answer back to back as they are, for data that carries its own format.

The packing into windows and the files written are pairs_prepare.py's; reading them back
as batches is packed.py's; evaluating on a pair file is nanogpt2/evaluate/answers.py's.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nanogpt2.data.format import TOKEN_DTYPE, DatasetError
from nanogpt2.data.sources import (
    TEXT_SUFFIXES,
    _import_datasets,
    _is_large,
    _offline_unless_reachable,
    _read_once,
)
from nanogpt2.tokenizer import EOT_ID, get_tokenizer

TEMPLATES = ("chat", "plain")
TOO_LONG = ("truncate", "refuse")
ROLES = ("system", "user", "assistant")

Part = tuple[str, bool]  # (text, trained)


class PairSettings(Protocol):
    """How rows become examples: data/prepare.py's settings of these names (pipeline.PrepareConfig), or evaluate's."""

    prompt_column: str
    completion_column: str
    chat: bool
    messages_column: str
    template: str


# transformers' tokenizer_config.json "chat_template": the same text as render_chat (then tokenized whole).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set content = message['content'] | trim -%}"
    "{%- if message['role'] == 'system' -%}{{ 'System: ' + content + '\\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ 'User: ' + content + '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ 'Assistant: ' + content + ('<|endoftext|>' if loop.last else '\\n') }}"
    "{%- else -%}{{ raise_exception('unknown role ' + message['role'] + ': use system, user or assistant') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
)


def prompt_text(template: str, prompt: str) -> str:
    """The untrained text a single-turn prompt becomes: what sampling must feed the model for an answer."""
    if template == "chat":
        return f"User: {prompt.strip()}\nAssistant:"
    if template == "plain":
        return prompt
    raise DatasetError(f"template={template!r}: choose {' or '.join(TEMPLATES)}")


def render_pair(template: str, prompt: str, completion: str) -> list[Part]:
    """A prompt/answer example as (text, trained) parts (the trained <|endoftext|> is added by encode_example)."""
    if template == "chat":
        prompt, completion = prompt.strip(), completion.strip()
    blank = "empty or only whitespace" if template == "chat" else "empty"
    if not prompt:
        raise DatasetError(f"the prompt is {blank}; fill it in or remove the row")
    if not completion:
        raise DatasetError(f"the completion is {blank}: there is nothing to train on; fill it in or remove the row")
    answer = " " + completion if template == "chat" else completion
    return [(prompt_text(template, prompt), False), (answer, True)]


def render_chat(messages: Sequence[Mapping[str, Any]]) -> list[Part]:
    """A conversation as (text, trained) parts: only the assistant's turns (and the \\n after one that another
    turn follows) are trained. It must hold a user turn and end with the assistant; contents are stripped."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise DatasetError("the conversation is not a non-empty list of {role, content} messages")
    parts: list[Part] = []
    for k, message in enumerate(messages, 1):
        if not isinstance(message, Mapping):
            raise DatasetError(f"message {k} is {type(message).__name__}, not an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DatasetError(f"message {k} has role {role!r}: the roles are {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            what = "empty" if isinstance(content, str) or content is None else f"{type(content).__name__}, not text"
            raise DatasetError(f"message {k} ({role}) is {what}; give every message text")
        if role == "assistant":
            parts += [("Assistant:", False), (" " + content.strip() + ("\n" if k < len(messages) else ""), True)]
        else:
            parts.append((f"{role.capitalize()}: {content.strip()}\n", False))
    if messages[-1]["role"] != "assistant":
        raise DatasetError(f"the conversation ends with a {messages[-1]['role']} turn: end it with the assistant's")
    if not any(m["role"] == "user" for m in messages):
        raise DatasetError("the conversation has no user turn: the assistant must answer someone")
    merged: list[Part] = []  # neighbours of the same kind become one text, tokenized whole
    for text, trained in parts:
        if merged and merged[-1][1] == trained:
            text = merged.pop()[0] + text
        merged.append((text, trained))
    return merged


def encode_example(parts: Sequence[Part]) -> tuple[np.ndarray, np.ndarray]:
    """(uint16 ids, bool trained) of an example: each part tokenized on its own, then a trained <|endoftext|>."""
    encode = get_tokenizer().encode  # "<|endoftext|>" in user text stays ordinary text
    ids: list[int] = []
    trained: list[bool] = []
    for text, is_trained in parts:
        piece = encode(text)
        ids += piece
        trained += [is_trained] * len(piece)
    return np.array([*ids, EOT_ID], dtype=TOKEN_DTYPE), np.array([*trained, True], dtype=bool)


# -- reading rows ------------------------------------------------------------------------


@dataclasses.dataclass
class Table:
    where: str  # how messages and meta.json name the input
    rows: Callable[[], Iterator[tuple[int, Mapping[str, Any]]]]  # (row number from 1, row), in order


def read_tables(
    inputs: Sequence[str], say: Callable[[str], None], hf_split: str = "train", streaming: str = "auto"
) -> list[Table]:
    """The inputs as tables, each checked up front (rows are read later, as they are needed); an input given
    twice is read once. hf_split and streaming: for hf:NAME, as data/prepare.py's --split and --streaming."""
    readers = {".csv": _csv_rows, ".jsonl": _jsonl_rows, ".json": _json_rows, ".parquet": _parquet_rows}
    tables = []
    for spec in _read_once(list(inputs), say):
        if spec.startswith("hf:"):
            name, _, config = spec[3:].partition(":")
            if not name:
                raise DatasetError(f"{spec!r}: write a Hugging Face dataset as hf:NAME or hf:NAME:CONFIG")
            rows = functools.partial(_hub_rows, name, config or None, hf_split, streaming)
            tables.append(Table(f"{spec} (split {hf_split!r})", rows))
            continue
        path, suffix = Path(spec).expanduser(), Path(spec).suffix.lower()
        if not path.exists():
            raise DatasetError(
                f"input {path} does not exist; check the path (Hugging Face datasets are written hf:NAME)"
            )
        if path.is_dir() or suffix in TEXT_SUFFIXES:
            raise DatasetError(
                f"pair data comes from tables: {path} is {'a folder' if path.is_dir() else 'a text file'}; give "
                f".csv, .jsonl, .json or .parquet files or hf:NAME, one example per row (or prepare plain text "
                f"without --prompt_column and --chat)"
            )
        if suffix not in readers:
            raise DatasetError(
                f"input {path}: unsupported file type {suffix or '(no suffix)'!r}; pair data comes from "
                f".csv, .jsonl, .json or .parquet files or hf:NAME"
            )
        if path.stat().st_size == 0:
            raise DatasetError(f"input {path} is empty (0 bytes); give a table with one example per row")
        tables.append(Table(str(path), functools.partial(readers[suffix], path)))
    return tables


def _csv_rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Rows of a CSV file with a header, numbered from 1 after the header."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # answers may be long
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        try:
            if not reader.fieldnames:
                raise DatasetError(f"{path} is empty; give a CSV file with a header row and one example per row")
            yield from enumerate(reader, 1)
        except csv.Error as e:
            raise DatasetError(f"{path}, line {reader.line_num}: not valid CSV ({e}); give a UTF-8 CSV file") from None
        except UnicodeDecodeError:
            raise DatasetError(f"{path}, near line {reader.line_num + 1}: not UTF-8; re-save it as UTF-8") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """One JSON object per line; rows are numbered by line (blank lines are skipped)."""
    with open(path, encoding="utf-8-sig") as f:
        n = 0
        try:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield n, _json_object(line, path, n)
        except UnicodeDecodeError:
            raise DatasetError(f"{path}, near row {n + 1}: not UTF-8; re-save it as UTF-8") from None


def _json_rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """A JSON list of objects (read whole), or, when the file does not start with "[", JSON lines."""
    with open(path, encoding="utf-8-sig") as f:
        try:
            is_list = f.read(1 << 12).lstrip().startswith("[")
            f.seek(0)
            data = json.load(f) if is_list else None
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}, line {e.lineno}: not valid JSON ({e.msg}); give a list of objects") from None
        except UnicodeDecodeError:
            raise DatasetError(f"{path} is not UTF-8; re-save it as UTF-8") from None
    if data is None:
        yield from _jsonl_rows(path)
    else:
        for n, item in enumerate(data, 1):
            yield n, _json_object(item, path, n)


def _json_object(item: Any, path: Path, n: int) -> Mapping[str, Any]:
    if isinstance(item, str):
        try:
            item = json.loads(item)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}, row {n}: not JSON ({e.msg}); give one JSON object per line") from None
    if not isinstance(item, dict):
        raise DatasetError(f"{path}, row {n}: a JSON {type(item).__name__}, not an object; give one object per row")
    return item


def _parquet_rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    datasets = _import_datasets(path.name)
    return _dataset_rows(
        lambda: datasets.load_dataset("parquet", data_files=str(path), split="train", streaming=True), str(path)
    )


def _hub_rows(name: str, config: str | None, split: str, streaming: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Rows of a Hugging Face dataset (or a local folder `datasets` understands), as sources.HubDataset reads it."""
    offline = _offline_unless_reachable()  # before `datasets` reads its settings
    datasets = _import_datasets(f"hf:{name}")
    if offline:
        datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    stream = streaming == "yes" or (streaming == "auto" and not offline and _is_large(datasets, name, config))
    return _dataset_rows(lambda: datasets.load_dataset(name, config, split=split, streaming=stream), f"hf:{name}")


def _dataset_rows(load: Callable[[], Any], where: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    try:
        yield from enumerate(load(), 1)
    except Exception as e:  # datasets/pyarrow/network errors: one line, not a 60-line traceback
        first = (str(e).strip().splitlines() or [""])[0][:300] or "no rows could be read (an empty or cut-off file?)"
        raise DatasetError(f"cannot read {where}: {type(e).__name__}: {first}") from None


def _cell(row: Mapping[str, Any], column: str, flag: str) -> Any:
    if column not in row:
        columns = ", ".join(repr(k) for k in row if k is not None)  # csv's None holds a row's extra fields
        raise DatasetError(f"no column {column!r} (its columns: {columns}); name the column with --{flag}")
    return row[column]


def _text(row: Mapping[str, Any], column: str, flag: str) -> str:
    value = _cell(row, column, flag)
    if value is not None and not isinstance(value, str):
        raise DatasetError(
            f"column {column!r} holds {type(value).__name__}, not text; name a text column with --{flag}"
        )
    return value or ""


def _messages(row: Mapping[str, Any], column: str) -> Any:
    messages = _cell(row, column, "messages_column")
    if isinstance(messages, str):  # a CSV cell holds the list as JSON text
        try:
            return json.loads(messages)
        except json.JSONDecodeError as e:
            raise DatasetError(f"column {column!r} holds text that is not a JSON list of messages ({e.msg})") from None
    return messages


def read_examples(cfg: PairSettings, tables: list[Table]) -> Iterator[tuple[str, list[Part]]]:
    """(where, parts) of every row of every input, in order; a bad row is an error naming it."""
    for table in tables:
        n = 0
        for n, row in table.rows():
            where = f"{table.where}, row {n}"
            try:
                if cfg.chat:
                    parts = render_chat(_messages(row, cfg.messages_column))
                else:
                    prompt = _text(row, cfg.prompt_column, "prompt_column")
                    parts = render_pair(cfg.template, prompt, _text(row, cfg.completion_column, "completion_column"))
            except DatasetError as e:
                raise DatasetError(f"{where}: {e}") from None
            yield where, parts
        if n == 0:
            raise DatasetError(f"{table.where} has no rows; give a table with one example per row")
