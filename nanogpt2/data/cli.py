"""Command lines: `data/prepare.py` for any text, and the ready recipes under data/.

    python data/prepare.py --input PATH [PATH ...] --out data/NAME [--val_fraction 0.1] [--seed 0]
                           [--column text] [--lines] [--workers N] [--block_size 1024]
    python data/shakespeare/prepare.py                 # downloads tiny Shakespeare (online)
    python data/shakespeare/prepare.py --input ../shared/corpora/shakespeare   # any local text
    python data/openwebtext/prepare.py                 # OpenWebText from the Hugging Face Hub

The scripts are thin; the recipes are functions here so that tests can call them.
"""

from __future__ import annotations

import argparse
import http.client
import os
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

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
SHAKESPEARE_OFFLINE = ("prepare from local text instead: python data/shakespeare/prepare.py --input PATH "
                       "(a .txt file or a folder of them, e.g. --input ../shared/corpora/shakespeare)")


def build_parser(prog: str, description: str, out_default: str | None,
                 inputs_required: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    f = {f.name: f for f in PrepareConfig.__dataclass_fields__.values()}
    p.add_argument("--input", nargs="+", action="extend", required=inputs_required, metavar="PATH",
                   help=".txt/.md files, folders of them (recursive), .csv/.jsonl/.json/.parquet files, or "
                        "hf:NAME[:CONFIG] for a Hugging Face dataset")
    out_help = "folder for train.bin, val.bin and meta.json" + (f" (default {out_default})" if out_default else "")
    p.add_argument("--out", required=out_default is None, default=out_default, metavar="DIR", help=out_help)
    p.add_argument("--val_fraction", type=float, default=f["val_fraction"].default,
                   help="share of documents for validation (of tokens for a single document); default %(default)s")
    p.add_argument("--seed", type=int, default=f["seed"].default,
                   help="seed of the train/val split; default %(default)s")
    p.add_argument("--column", default=f["column"].default,
                   help="text column of tables and datasets; default %(default)s")
    p.add_argument("--lines", action="store_true", help="each line of a .txt/.md file is one document")
    p.add_argument("--workers", type=int, default=0, help="tokenizer threads; default: one per CPU core")
    p.add_argument("--block_size", type=int, default=f["block_size"].default,
                   help="refuse splits shorter than one window of this many tokens; default %(default)s")
    p.add_argument("--split", dest="hf_split", default=f["hf_split"].default,
                   help="split of an hf: dataset to read; default %(default)s")
    p.add_argument("--streaming", choices=("auto", "yes", "no"), default="auto",
                   help="stream hf: datasets (auto: unless known to be under 1 GB)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "data/prepare.py", out_default: str | None = None,
         default_inputs: Callable[[], list[str]] | None = None, **defaults) -> dict:
    """Parse the command line and prepare; returns meta.json's contents. `defaults` override option
    defaults (a recipe's val_fraction and seed); `default_inputs` supplies inputs when --input is absent."""
    parser = build_parser(prog, "Turn text into GPT-2 token files (train.bin, val.bin, meta.json) for training.",
                          out_default, inputs_required=default_inputs is None)
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    inputs = args.input or default_inputs()
    cfg = PrepareConfig(inputs=inputs, out=args.out, val_fraction=args.val_fraction, seed=args.seed,
                        column=args.column, lines=args.lines, workers=args.workers, block_size=args.block_size,
                        hf_split=args.hf_split, streaming=args.streaming, quiet=args.quiet)
    return prepare(cfg)


def shakespeare_main(argv: Sequence[str] | None = None, *, folder: Path) -> dict:
    """data/shakespeare/prepare.py: tiny Shakespeare (downloaded) or any local text, into `folder`."""
    return main(argv, prog="data/shakespeare/prepare.py", out_default=str(folder),
                default_inputs=lambda: [str(download(TINY_SHAKESPEARE_URL, _cache_dir() / "tinyshakespeare.txt",
                                                     offline_hint=SHAKESPEARE_OFFLINE))])


def openwebtext_main(argv: Sequence[str] | None = None, *, folder: Path) -> dict:
    """data/openwebtext/prepare.py: OpenWebText from the Hub (or --input a local copy), into `folder`."""
    return main(argv, prog="data/openwebtext/prepare.py", out_default=str(folder),
                default_inputs=lambda: [OPENWEBTEXT], val_fraction=0.0005, seed=2357)


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nanogpt2"


def download(url: str, dest: Path, *, offline_hint: str, timeout: float = 30.0) -> Path:
    """Fetch `url` to `dest` once (kept for later runs); a one-line DatasetError when offline."""
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    print(f"downloading {url} -> {dest}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
            # read() returns b"" when the server hangs up early, as it does at the real end:
            # compare with the announced length so a cut-short file is never cached as whole.
            expected = response.headers.get("Content-Length")
            if expected is not None and f.tell() != int(expected):
                raise DatasetError(f"the download of {url} was cut short ({f.tell():,} of {int(expected):,} bytes); "
                                   f"run again, or {offline_hint}")
        os.replace(tmp, dest)
    except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts, refused, IncompleteRead
        reason = getattr(e, "reason", None) or e
        raise DatasetError(f"cannot download {url} ({reason}); offline? {offline_hint}") from None
    finally:
        tmp.unlink(missing_ok=True)  # gone after os.replace; a leftover only if something failed
    return dest
