"""model.Dropout's cheaper CPU mask is nn.Dropout's distribution, and the written-out attention it brings is SDPA's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nanogpt2.model import GPT, Dropout, GPTConfig

from conftest import loss_and_grads


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_cheap_mask_keeps_each_value_with_probability_one_minus_p(p):
    """Over 2M values the kept fraction is 1 - p within 5 standard deviations, kept values are scaled by exactly
    1 / (1 - p), dropped ones are 0, and the gradient flows through the same mask."""
    torch.manual_seed(0)
    drop = Dropout(p)
    drop.cheap_cpu_mask = True
    x = torch.rand(2_000_000) + 1.0  # never 0, so that a 0 output means dropped
    x.requires_grad_()
    y = drop(x)
    kept = y != 0
    n = x.numel()
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * ((p * (1 - p)) / n) ** 0.5
    assert torch.equal(y[kept], x.detach()[kept] * (1.0 / (1.0 - p)))
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() * (1.0 / (1.0 - p)))


def test_cheap_mask_is_off_in_eval_and_by_default():
    """In eval mode, and unless asked for, Dropout is nn.Dropout: the identity in eval, PyTorch's mask otherwise."""
    x = torch.randn(1000)
    drop = Dropout(0.5)
    drop.cheap_cpu_mask = True
    assert torch.equal(drop.eval()(x), x)
    plain = Dropout(0.5)
    torch.manual_seed(3)
    expected = F.dropout(x, 0.5, True)
    torch.manual_seed(3)
    assert torch.equal(plain(x), expected)


def test_written_out_attention_equals_sdpa(monkeypatch):
    """With the cheaper mask on, training attention runs written out (SDPA is not called); with its dropout made
    the identity, the model's loss and gradients equal the SDPA path's (fp32, 1e-5)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=101, dropout=0.1))
    model.train()
    monkeypatch.setattr(Dropout, "forward", lambda self, x: x)  # keep every value: only the attention math differs
    x, y = torch.randint(0, 101, (3, 16)), torch.randint(0, 101, (3, 16))
    sdpa_calls = []
    real_sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: sdpa_calls.append(1) or real_sdpa(*a, **k))

    for block in model.h:
        block.attn.attn_dropout.p = 0.0  # SDPA's dropout_p: off, to compare the attention math alone
    _, sdpa_loss, sdpa = loss_and_grads(model, x, y)  # cheap_cpu_mask off: SDPA
    model.use_cpu_training_paths(True)
    model.fused_loss = False
    for block in model.h:
        block.attn.attn_dropout.p = 0.1  # the written-out path is for dropout > 0 (its Dropout is the identity)
    assert len(sdpa_calls) == 2  # one per layer
    _, loss, written = loss_and_grads(model, x, y)  # the attention's Dropout has p = 0.1 > 0: written out
    assert len(sdpa_calls) == 2, "the written-out attention was not taken"
    assert torch.allclose(loss, sdpa_loss, rtol=0, atol=1e-5)
    for name in sdpa:
        assert torch.allclose(sdpa[name], written[name], rtol=0, atol=1e-5), name
