"""loss_chunk_tokens: the LM head and cross-entropy a chunk at a time give the plain path's loss and gradients."""

from __future__ import annotations

import pytest
import torch

from nanogpt2.model import GPT, GPTConfig

from conftest import assert_loss_path_like_plain, assert_trains_like_plain


@pytest.mark.parametrize("pad", [1, 64])
@pytest.mark.parametrize("chunk", [7, 16, 1000])
def test_chunked_loss_equals_the_plain_path(pad, chunk):
    """Loss and every gradient equal the plain path's (fp32, 1e-6), with ignored (-1) targets, a padded
    vocabulary, and chunks that do not divide the B*T = 48 positions (or exceed them); no logits come back."""
    assert_loss_path_like_plain(lambda model: setattr(model, "loss_chunk_tokens", chunk), pad)


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
