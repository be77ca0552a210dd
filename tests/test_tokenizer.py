"""The tokenizer produces GPT-2's ids and round-trips real text exactly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nanogpt2.tokenizer import EOT_ID, get_tokenizer

# Reference ids of GPT-2's tokenizer (the first is from the Hugging Face GPT-2 docs).
KNOWN = {
    "Hello world": [15496, 995],
    "Hello, my dog is cute": [15496, 11, 616, 3290, 318, 13779],
    " the": [262],
}


@pytest.mark.parametrize("text", list(KNOWN))
def test_known_ids(text):
    """Fixed strings encode to GPT-2's published ids."""
    assert get_tokenizer().encode(text) == KNOWN[text]


def test_end_of_text():
    """<|endoftext|> is id 50256 only when allowed; otherwise it is plain text."""
    tok = get_tokenizer()
    assert tok.eot_id == EOT_ID == 50256
    assert tok.encode("<|endoftext|>", allow_eot=True) == [50256]
    assert 50256 not in tok.encode("<|endoftext|>")


def test_round_trip_every_shakespeare_file(shakespeare_dir):
    """decode(encode(text)) gives back every work in the corpus, byte for byte."""
    tok = get_tokenizer()
    files = sorted(shakespeare_dir.glob("*.txt"))
    assert files, f"no .txt files in {shakespeare_dir}"
    for path in files:
        text = path.read_text(encoding="utf-8")
        ids = tok.encode(text)
        assert max(ids) < tok.vocab_size
        assert tok.decode(ids) == text, path.name


def test_missing_ranks_error_names_the_variable(tmp_path):
    """Without cached ranks and without network, the error is one line naming TIKTOKEN_CACHE_DIR."""
    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(tmp_path),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    code = (
        "from nanogpt2 import get_tokenizer\nfrom nanogpt2.errors import run_main\n"
        "run_main(lambda argv: get_tokenizer())"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "TIKTOKEN_CACHE_DIR" in lines[0]
