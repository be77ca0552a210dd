"""loss_chunk_tokens: the LM head and cross-entropy a chunk at a time give the plain path's loss and gradients."""

from __future__ import annotations

import pytest
import torch

from nanogpt2.model import GPT, GPTConfig

from conftest import assert_trains_like_plain


def loss_and_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    logits, loss = model(x, y)
    loss.backward()
    return logits, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("pad", [1, 64])
@pytest.mark.parametrize("chunk", [7, 16, 1000])
def test_chunked_loss_equals_the_plain_path(pad, chunk):
    """Loss and every gradient equal the plain path's (fp32, 1e-6), with ignored (-1) targets, a padded
    vocabulary, and chunks that do not divide the B*T = 48 positions (or exceed them); no logits come back."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=101, pad_vocab_multiple=pad))
    x, y = torch.randint(0, 101, (3, 16)), torch.randint(0, 101, (3, 16))
    y[0, :5] = -1
    y[2, -3:] = -1
    _, plain_loss, plain = loss_and_grads(model, x, y)
    model.loss_chunk_tokens = chunk
    logits, loss, chunked = loss_and_grads(model, x, y)
    assert logits is None
    assert torch.allclose(loss, plain_loss, rtol=0, atol=1e-6)
    for name in plain:
        assert torch.allclose(plain[name], chunked[name], rtol=0, atol=1e-6), name


def test_chunked_loss_keeps_no_full_logits_for_backward():
    """Nothing of the (B*T, V) logits' size is saved for backward when chunking: the largest saved tensor is
    at most a chunk's logits, and the total saved shrinks."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, vocab_size=5000))
    x = torch.randint(0, 5000, (4, 64))

    def saved():
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x, x)[1].backward()
        return sizes

    plain = saved()
    model.loss_chunk_tokens = 32
    chunked = saved()
    assert max(plain) >= 4 * 64 * 5000 and max(chunked) <= 32 * 5000
    assert sum(chunked) < sum(plain)


def test_training_with_chunked_loss_matches_plain(shakespeare_data, tmp_path):
    """Three train.py steps with loss_chunk_tokens end with the plain run's weights (1e-6) and losses."""
    assert_trains_like_plain(shakespeare_data, tmp_path, "--loss_chunk_tokens=20")
