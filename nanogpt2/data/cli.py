"""Command lines: `data/prepare.py` for any text, and the ready recipes under data/.

    python data/prepare.py --input PATH [PATH ...] --out data/NAME [--val_fraction 0.1] [--seed 0]
                           [--column text] [--lines] [--workers N] [--block_size 1024]
    python data/prepare.py --help                      # every setting, with its meaning
    python data/shakespeare/prepare.py                 # downloads tiny Shakespeare (online)
    python data/shakespeare/prepare.py --input plays/  # any local .txt file or folder of them
    python data/openwebtext/prepare.py                 # OpenWebText from the Hugging Face Hub

The settings are the fields of `PrepareConfig` (pipeline.py), read by the same rules as
train.py's (nanogpt2/common/configurator.py): `--key value` or `--key=value`, config files too.
The scripts are thin; the recipes are functions here so that tests can call them.
"""

from __future__ import annotations

import http.client
import os
import sys
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from nanogpt2.common.configurator import read_settings
from nanogpt2.common.files import atomic_write
from nanogpt2.data.format import DatasetError
from nanogpt2.data.pipeline import PrepareConfig, prepare

# Tiny Shakespeare: 1 MB of the plays (public domain), as collected for Karpathy's char-rnn and
# used by nanoGPT's shakespeare recipes.
TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
# OpenWebText (Gokaslan & Cohen 2019), the open replication of GPT-2's WebText, as nanoGPT uses it:
# about 8M documents, 9B GPT-2 tokens. We keep nanoGPT's val_fraction=0.0005 and seed 2357, but our
# hash-based split picks other validation documents than nanoGPT's shuffled one: losses compare
# closely, not exactly.
OPENWEBTEXT = "hf:Skylion007/openwebtext"
# FineWeb-Edu's 10B-token sample (Penedo et al. 2024, "The FineWeb Datasets"), what llm.c and nanochat train on.
FINEWEB_EDU = "hf:HuggingFaceFW/fineweb-edu:sample-10BT"
SHAKESPEARE_OFFLINE = (
    "prepare from local text instead: python data/shakespeare/prepare.py --input PATH "
    "(a .txt file or a folder of them, e.g. a copy of the plays from Project Gutenberg)"
)


def main(
    argv: Sequence[str] | None = None, *, default_inputs: Callable[[], list[str]] | None = None, **defaults
) -> dict:
    """Read the settings from the command line and prepare; returns meta.json's contents.

    `defaults` replace PrepareConfig's defaults (a recipe's out folder, val_fraction and seed), and
    `default_inputs` gives the inputs when the command line names none (a recipe's download)."""
    settings = read_settings(PrepareConfig, sys.argv[1:] if argv is None else argv, base=defaults)
    if not settings.get("inputs") and default_inputs is not None:
        settings["inputs"] = default_inputs()
    return prepare(PrepareConfig(**settings))


def shakespeare_main(argv: Sequence[str] | None = None, *, folder: Path) -> dict:
    """data/shakespeare/prepare.py: tiny Shakespeare (downloaded) or any local text, into `folder`."""
    return main(
        argv,
        out=str(folder),
        default_inputs=lambda: [
            str(download(TINY_SHAKESPEARE_URL, _cache_dir() / "tinyshakespeare.txt", offline_hint=SHAKESPEARE_OFFLINE))
        ],
    )


def openwebtext_main(argv: Sequence[str] | None = None, *, folder: Path) -> dict:
    """data/openwebtext/prepare.py: OpenWebText from the Hub (or --input a local copy), into `folder`."""
    return main(argv, out=str(folder), default_inputs=lambda: [OPENWEBTEXT], val_fraction=0.0005, seed=2357)


def fineweb_main(argv: Sequence[str] | None = None, *, folder: Path) -> dict:
    """data/fineweb/prepare.py: FineWeb-Edu sample-10BT from the Hub, streamed (or --input a local copy)."""
    return main(argv, out=str(folder), default_inputs=lambda: [FINEWEB_EDU], val_fraction=0.001, seed=2357)


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nanogpt2"


def download(url: str, dest: Path, *, offline_hint: str, timeout: float = 30.0) -> Path:
    """Fetch `url` to `dest` once (kept for later runs); a one-line DatasetError when offline."""
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {url} -> {dest}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_write(dest) as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
            # read() returns b"" when the server hangs up early, as it does at the real end:
            # compare with the announced length so a cut-short file is never cached as whole.
            expected = response.headers.get("Content-Length")
            if expected is not None and f.tell() != int(expected):
                raise DatasetError(
                    f"the download of {url} was cut short ({f.tell():,} of {int(expected):,} bytes); "
                    f"run again, or {offline_hint}"
                )
    except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts, refused, IncompleteRead
        reason = getattr(e, "reason", None) or e
        raise DatasetError(f"cannot download {url} ({reason}); offline? {offline_hint}") from None
    return dest
