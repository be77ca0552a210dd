"""Activation checkpointing (checkpointing=True): the same numbers as a plain run, with less saved."""

from __future__ import annotations

import pytest
import torch

from nanogpt2.model import GPT, GPTConfig

from conftest import assert_trains_like_plain


def loss_and_grads(model, x, y, seed):
    torch.manual_seed(seed)  # the same dropout stream for both runs
    model.zero_grad(set_to_none=True)
    loss = model(x, y)[1]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_checkpointing_gives_the_same_loss_and_gradients(dropout):
    """With checkpointing the loss and every gradient equal the plain model's (fp32, 1e-6), dropout included:
    recomputation replays the same masks."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=3, n_head=2, n_embd=32, block_size=16, vocab_size=101, dropout=dropout)).train()
    x, y = torch.randint(0, 101, (4, 16)), torch.randint(0, 101, (4, 16))
    plain_loss, plain = loss_and_grads(model, x, y, seed=7)
    model.checkpointing = True
    ckpt_loss, ckpt = loss_and_grads(model, x, y, seed=7)
    assert torch.allclose(plain_loss, ckpt_loss, rtol=0, atol=1e-6)
    for name in plain:
        assert torch.allclose(plain[name], ckpt[name], rtol=0, atol=1e-6), name


def test_checkpointing_saves_less_for_backward():
    """The tensors kept for backward (counted with saved-tensor hooks) shrink with checkpointing."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=4, n_head=2, n_embd=64, block_size=32, vocab_size=101, dropout=0.1)).train()
    x = torch.randint(0, 101, (4, 32))

    def saved_bytes():
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x, x)[1].backward()
        return total

    plain = saved_bytes()
    model.checkpointing = True
    assert saved_bytes() < 0.5 * plain


def test_a_checkpointed_run_trains_like_a_plain_one(shakespeare_data, tmp_path):
    """Three steps of train.py with checkpointing=True (dropout on) end with the plain run's weights (1e-6)."""
    assert_trains_like_plain(shakespeare_data, tmp_path, "--checkpointing=True", dropout=0.1)
