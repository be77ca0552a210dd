"""Finding and reading evaluation data: jsonl rows with their line numbers, and checked downloads.

Online, a task whose public file has a published checksum is downloaded once
into a cache folder and verified by SHA-256 before use; a file that does not
match is refused, never used. Offline, or for any task without such a file,
`--data=PATH` names a local copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nanogpt2.errors import UserError

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "nanogpt2" / "eval"


@dataclass(frozen=True)
class PublicFile:
    url: str
    sha256: str
    name: str


# OpenAI's LAMBADA test set as GPT-2 was evaluated on it (5,153 passages, one {"text": ...} per line).
# URL and SHA-256: the checksum table of the EleutherAI/lambada_openai dataset card on the Hugging Face
# Hub ("Hash Checksums": openai/lambada_test.jsonl), the same hash EleutherAI's lm-evaluation-harness
# pinned for this file in its original lambada task.
LAMBADA = PublicFile(
    url="https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl",
    sha256="4aa8d02cd17c719165fc8a7887fddd641f43fcafa4b1c806ca8abc31fabdb226",
    name="lambada_test.jsonl",
)

# HellaSwag's validation file (github.com/rowanz/hellaswag, data/hellaswag_val.jsonl). We know of no
# published checksum for it, so it is not downloaded: a file we cannot verify could be anything.
HELLASWAG_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(file: PublicFile, cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """The cached copy of `file`, downloaded and verified on first use."""
    cache_dir = Path(cache_dir).expanduser()
    path = cache_dir / file.name
    offline = f"offline? download {file.url} yourself and pass --data=PATH_TO_IT"
    if path.is_file():
        if sha256_of(path) == file.sha256:
            return path
        raise UserError(
            f"{path} does not have the published SHA-256 of {file.name} ({file.sha256}); "
            f"delete it to download it again, or pass --data=PATH to a good copy"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{file.name}.part-{os.getpid()}")
    try:
        with urllib.request.urlopen(file.url, timeout=60) as response, open(partial, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
    except OSError as e:  # URLError, timeouts and disk errors are all OSErrors
        partial.unlink(missing_ok=True)
        raise UserError(f"could not download {file.url}: {type(e).__name__}: {e}; {offline}") from None
    got = sha256_of(partial)
    if got != file.sha256:
        partial.unlink(missing_ok=True)
        raise UserError(
            f"the download of {file.url} has SHA-256 {got}, not the published {file.sha256}; refusing it; {offline}"
        )
    os.replace(partial, path)  # only a verified file ever takes the cache's name
    return path


def read_jsonl(path: str | Path, what: str) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a jsonl file; `what` names the expected rows."""
    path = Path(path).expanduser()
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise UserError(f"{path} {state}; expected a .jsonl file of {what}")
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{number}: not valid JSON ({e.msg}); expected one object a line") from None
                if not isinstance(row, dict):
                    raise UserError(f"{path}:{number}: expected a JSON object ({what}), got {type(row).__name__}")
                rows.append((number, row))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; expected a .jsonl file of {what}") from None
    if not rows:
        raise UserError(f"{path} holds no examples; expected a .jsonl file of {what}")
    return rows


def field(path: str | Path, number: int, row: dict, name: str, kind: type | tuple[type, ...]):
    """row[name], checked to exist and to be of `kind`; the error names the file, line and field."""
    if name not in row:
        raise UserError(f"{path}:{number}: missing the field {name!r} (it has {', '.join(map(repr, row)) or 'none'})")
    value = row[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise UserError(f"{path}:{number}: field {name!r} must be {names}, got {value!r}")
    return value
