"""Token choice: top-k and top-p keep exactly the intended sets, draws follow the filtered distribution,
and streamed text never breaks a character."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nanogpt2 import UserError, get_tokenizer
from nanogpt2.generate.sampling import TextStream, check_sampling, next_token, top_k_filter, top_p_filter


def random_logits(batch: int = 4, vocab: int = 30, seed: int = 0) -> torch.Tensor:
    return 2.0 * torch.randn(batch, vocab, generator=torch.Generator().manual_seed(seed))


def kept(logits: torch.Tensor) -> list[set[int]]:
    return [set(torch.nonzero(torch.isfinite(row)).flatten().tolist()) for row in logits]


@pytest.mark.parametrize("k", [1, 5, 29, 30, 100])
def test_top_k_keeps_exactly_the_k_largest(k):
    """top_k_filter keeps the k largest logits of each row, unchanged, and nothing else (all of them when k >= V)."""
    logits = random_logits()
    out = top_k_filter(logits, k)
    for row, kept_ids, filtered in zip(logits.numpy(), kept(out), out):
        expected = set(np.argsort(-row, kind="stable")[: min(k, len(row))].tolist())
        assert kept_ids == expected
        assert torch.equal(filtered[sorted(expected)], torch.from_numpy(row)[sorted(expected)])


def nucleus_reference(row: np.ndarray, size: int) -> tuple[float, set[int]]:
    """A p that falls strictly between the masses of the top size-1 and top size tokens, and those tokens:
    the smallest set of most likely tokens holding >= p is then exactly the top `size` (float64)."""
    probs = np.exp(row - row.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    mass = np.cumsum(probs[order])
    below = mass[size - 2] if size >= 2 else 0.0
    return float((below + mass[size - 1]) / 2), set(order[:size].tolist())


@pytest.mark.parametrize("size", [1, 2, 5, 17, 30])
def test_top_p_keeps_exactly_the_nucleus(size):
    """top_p_filter keeps the smallest set of most likely tokens whose probability reaches p, per row,
    checked against a float64 reference at p values between two nucleus sizes."""
    logits = random_logits()
    for row in logits:
        p, expected = nucleus_reference(row.double().numpy(), size)
        out = top_p_filter(row[None], p)
        assert kept(out)[0] == expected
        assert torch.equal(out[0, sorted(expected)], row[sorted(expected)])


def test_top_p_one_keeps_everything_and_tiny_p_keeps_the_best():
    """p = 1 leaves the logits untouched; a p near 0 keeps only the most likely token."""
    logits = random_logits()
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    assert kept(top_p_filter(logits, 1e-9)) == [{int(i)} for i in logits.argmax(-1)]


def reference_distribution(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float) -> np.ndarray:
    """Temperature, then top-k, then top-p on what is left, then renormalise (float64, written independently)."""
    z = logits / temperature
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    keep = np.zeros(len(probs), dtype=bool)
    keep[order[: top_k or len(probs)]] = True
    probs = np.where(keep, probs, 0.0) / probs[keep].sum()
    total = 0.0
    for i in order:
        if total >= top_p:
            probs[i] = 0.0
        total += probs[i]
    return probs / probs.sum()


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(1.0, None, 1.0), (0.7, None, 1.0), (1.5, 4, 1.0), (1.0, None, 0.8), (0.9, 6, 0.7)],
    ids=["plain", "cool", "hot-top4", "nucleus0.8", "top6-nucleus0.7"],
)
def test_draws_follow_the_filtered_distribution(temperature, top_k, top_p):
    """20,000 draws never pick a filtered-out token, and their frequencies match the filtered,
    renormalised distribution to within 4 standard errors."""
    row = random_logits(batch=1, vocab=10, seed=3)[0]
    expected = reference_distribution(row.double().numpy(), temperature, top_k, top_p)
    n = 20_000
    draws = next_token(row.expand(n, -1), temperature, top_k, top_p, torch.Generator().manual_seed(0))
    freq = np.bincount(draws.numpy(), minlength=10) / n
    assert np.all(freq[expected == 0] == 0)
    assert np.all(np.abs(freq - expected) <= 4 * np.sqrt(expected * (1 - expected) / n) + 1e-12)


def test_temperature_zero_is_argmax():
    """Temperature 0 returns each row's most likely token, whatever top-k and top-p say."""
    logits = random_logits(batch=8)
    assert torch.equal(next_token(logits, 0.0, top_k=3, top_p=0.5), logits.argmax(-1))


@pytest.mark.parametrize(
    "temperature, top_k, top_p, message",
    [
        (-0.1, None, 1.0, "temperature"),
        (1.0, 0, 1.0, "top_k"),
        (1.0, 2.5, 1.0, "top_k"),
        (1.0, None, 0.0, "top_p"),
        (1.0, None, 1.01, "top_p"),
    ],
)
def test_bad_settings_are_refused(temperature, top_k, top_p, message):
    """check_sampling names the setting that is out of range."""
    with pytest.raises(UserError, match=message):
        check_sampling(temperature, top_k, top_p)


TEXT = "Café crème, naïve façade — 日本語のテキスト, emoji 🙂🎭 and ÆØÅ. ROMEO: O, she doth teach the torches!"


def test_text_stream_never_splits_characters():
    """Streaming one token at a time prints exactly the text, with no replacement marks,
    although some tokens on their own are only part of a character."""
    tok = get_tokenizer()
    ids = tok.encode(TEXT)
    partial = [i for i in ids if "\ufffd" in tok.decode([i])]
    assert partial, "the text must contain tokens that split a character, or the test proves nothing"
    stream = TextStream(tok)
    pieces = [stream.push([i]) for i in ids] + [stream.finish()]
    assert "".join(pieces) == TEXT
    assert not any("\ufffd" in piece for piece in pieces)


def test_text_stream_marks_an_unfinished_character_at_the_end():
    """If the tokens stop in the middle of a character, finish() emits U+FFFD instead of dropping it silently."""
    tok = get_tokenizer()
    ids = tok.encode("🙂")
    assert len(ids) > 1  # the emoji takes several byte tokens
    stream = TextStream(tok)
    text = "".join(stream.push([i]) for i in ids[:-1])
    assert text == "" and stream.finish() == "\ufffd"
