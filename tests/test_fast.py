"""nanogpt2/fast: each CPU path computes what the plain model computes (or draws from the same distribution),
keeps the state dict as it is, and is taken where it pays.

- fused_loss: the LM head and cross-entropy as one autograd step give the plain path's loss and gradients, in
  less memory; training takes it for eager fp32 on the CPU.
- dropout: the mask-bits dropout is nn.Dropout's distribution, and the written-out attention is SDPA's.
- linear: FewRowsLinear is nn.Linear.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nanogpt2 import fast
from nanogpt2.fast.dropout import DropoutAttention, MaskBitsDropout
from nanogpt2.fast.fused_loss import FusedLossGPT, lm_head_loss
from nanogpt2.fast.linear import FewRowsLinear
from nanogpt2.model import GPT, GPTConfig
from nanogpt2.train.setup import build_run

from conftest import TINY_RUN, assert_loss_path_like_plain, loss_and_grads


@pytest.mark.parametrize("pad", [1, 64])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_fused_loss_equals_the_plain_path(pad, dropout):
    """Loss and every parameter's gradient equal the plain path's (fp32, 1e-6), with ignored (-1) targets, a
    padded vocabulary (whose rows get zero gradient from the head) and dropout; no logits come back."""
    fused = assert_loss_path_like_plain(lambda model: fast.for_cpu_training(model, dropout=False), pad, dropout)
    if pad > 1:
        assert fused["wte.weight"][101:].abs().sum() == 0


def test_fused_loss_at_gpt2_vocabulary_size():
    """At GPT-2's 50,257 tokens and a realistic logit spread the loss equals F.cross_entropy's (1e-6 relative)
    and the gradients of x and W equal autograd's through F.linear + F.cross_entropy (1e-5 of their largest)."""
    torch.manual_seed(0)
    x = torch.randn(64, 48, requires_grad=True)
    w = (0.5 * torch.randn(50257, 48)).requires_grad_()
    t = torch.randint(0, 50257, (64,))
    plain = F.cross_entropy(F.linear(x, w), t)
    gx, gw = torch.autograd.grad(plain, (x, w))
    fused = lm_head_loss(x, w, t, 50257)
    fx, fw = torch.autograd.grad(fused, (x, w))
    assert torch.allclose(fused, plain, rtol=1e-6, atol=0)
    for a, b in ((gx, fx), (gw, fw)):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_fused_loss_with_a_frozen_head_gives_only_the_input_gradient():
    """With the head's weight frozen (LoRA), no weight gradient is made and the input's equals the plain one."""
    torch.manual_seed(0)
    x = torch.randn(10, 8, requires_grad=True)
    w = torch.randn(30, 8)
    t = torch.randint(0, 30, (10,))
    (plain,) = torch.autograd.grad(F.cross_entropy(F.linear(x, w), t), x)
    loss = lm_head_loss(x, w, t, 30)
    loss.backward()
    assert w.grad is None and torch.allclose(x.grad, plain, rtol=0, atol=1e-6)


def test_fused_loss_refuses_a_second_backward():
    """Backward reuses the forward's buffer, so a second backward (retain_graph) is refused with a clear error
    rather than computing a wrong gradient from overwritten probabilities."""
    x = torch.randn(4, 8, requires_grad=True)
    loss = lm_head_loss(x, torch.randn(30, 8), torch.randint(0, 30, (4,)), 30)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="cannot run backward twice"):
        loss.backward()


def test_fused_loss_holds_less_memory():
    """Measured with MemTracker on real CPU tensors, a forward + backward of the fused path peaks lower than
    the plain path's by more than 1.5 (N, V) tensors: it holds one where the plain path's peak holds three."""
    from torch.distributed._tools.mem_tracker import MemTracker

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, vocab_size=5000))
    x = torch.randint(0, 5000, (4, 64))

    def peak(fused: bool) -> int:
        model.__class__ = FusedLossGPT if fused else GPT
        model.zero_grad(set_to_none=True)
        tracker = MemTracker()
        tracker.track_external(model)
        with tracker:
            model(x, x)[1].backward()
        return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]

    logits_bytes = 4 * 64 * 5000 * 4
    assert peak(False) - peak(True) >= 1.5 * logits_bytes


@pytest.mark.parametrize(("settings", "fused"), [([], True), (["--dtype=bfloat16"], False)])
def test_training_takes_the_fused_loss_where_it_pays(shakespeare_data, tmp_path, settings, fused):
    """train.py on the CPU in fp32, uncompiled, trains through the fused loss (its forward returns no logits)
    and the cheaper dropout masks; under autocast it keeps the plain paths, whose precision autocast decides."""
    setup = build_run([*TINY_RUN, f"--dataset={shakespeare_data}", f"--out_dir={tmp_path / 'run'}", *settings])
    try:
        x, y = torch.randint(0, 50257, (2, 2, 16))
        with setup.rt.autocast():
            logits, _ = setup.model(x, y)
        assert isinstance(setup.raw_model, FusedLossGPT) == fused and (logits is None) == fused
        dropouts = [m for m in setup.raw_model.modules() if isinstance(m, torch.nn.Dropout)]
        assert dropouts and all(isinstance(m, MaskBitsDropout) == fused for m in dropouts)
        attention = [block.attn for block in setup.raw_model.h]
        assert all(isinstance(a, DropoutAttention) == fused for a in attention)
    finally:
        setup.logger.close()


def test_fused_loss_edge_batches_behave_as_cross_entropy():
    """A batch whose targets are all ignored gives zero gradients (not NaN), as F.cross_entropy's; a non-finite
    logit row that is ignored does not reach the loss; targets other than ids and -1 (e.g. transformers' -100)
    are refused with a one-line error rather than trained as token 0."""
    from nanogpt2.errors import UserError

    torch.manual_seed(0)
    x = torch.randn(6, 8, requires_grad=True)
    w = torch.randn(30, 8, requires_grad=True)
    lm_head_loss(x, w, torch.full((6,), -1), 30).backward()
    assert torch.equal(x.grad, torch.zeros_like(x)) and torch.equal(w.grad, torch.zeros_like(w))

    bad = x.detach().clone()
    bad[2] = float("nan")
    t = torch.randint(0, 30, (6,))
    t[2] = -1
    assert torch.allclose(lm_head_loss(bad, w, t, 30), F.cross_entropy(F.linear(bad, w), t, ignore_index=-1))

    for wrong in (-100, 30):
        t[0] = wrong
        with pytest.raises(UserError, match=r"targets must be token ids in \[0, 30\) or -1"):
            lm_head_loss(x, w, t, 30)


def test_fused_loss_is_fp32_eager_only():
    """Its backward overwrites the forward's buffer, so a second-order gradient is refused rather than wrong;
    bf16 inputs or autocast are refused by lm_head_loss, and the model then keeps the plain path (logits
    returned) instead, written-out attention included."""
    from nanogpt2.errors import UserError

    x = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(30, 8)
    (g,) = torch.autograd.grad(lm_head_loss(x, w, torch.randint(0, 30, (4,)), 30), x, create_graph=True)
    assert not g.requires_grad  # no graph of the gradient: differentiating it again fails loudly
    with pytest.raises(RuntimeError, match="does not require grad"):
        g.sum().backward()
    with pytest.raises(UserError, match="float32 only"):
        lm_head_loss(x.bfloat16(), w.bfloat16(), torch.zeros(4, dtype=torch.long), 30)

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=50, dropout=0.1))
    fast.for_cpu_training(model)
    idx = torch.randint(0, 50, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
    assert logits is not None and torch.isfinite(loss)
    model.to(torch.bfloat16)
    logits, loss = model(idx, idx)
    loss.backward()
    assert logits is not None and logits.dtype == torch.bfloat16


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_cheap_mask_keeps_each_value_with_probability_one_minus_p(p):
    """Over 2M values the kept fraction is 1 - p within 5 standard deviations, kept values are scaled by exactly
    1 / (1 - p), dropped ones are 0, and the gradient flows through the same mask."""
    torch.manual_seed(0)
    drop = MaskBitsDropout(p)
    x = torch.rand(2_000_000) + 1.0  # never 0, so that a 0 output means dropped
    x.requires_grad_()
    y = drop(x)
    kept = y != 0
    n = x.numel()
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * ((p * (1 - p)) / n) ** 0.5
    assert torch.equal(y[kept], x.detach()[kept] * (1.0 / (1.0 - p)))
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() * (1.0 / (1.0 - p)))


def test_cheap_mask_is_the_identity_in_eval_and_at_p_0():
    """In eval mode, and with nothing to drop, the mask-bits dropout returns its input unchanged."""
    x = torch.randn(1000)
    assert torch.equal(MaskBitsDropout(0.5).eval()(x), x)
    assert torch.equal(MaskBitsDropout(0.0)(x), x)


def test_written_out_attention_equals_sdpa(monkeypatch):
    """With the CPU dropout path on, training attention runs written out (SDPA is not called); with its dropout
    made the identity, the model's loss and gradients equal SDPA's (fp32, 1e-5)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=101, dropout=0.1))
    monkeypatch.setattr(MaskBitsDropout, "forward", lambda self, x: x)  # keep every value: only the math differs
    x, y = torch.randint(0, 101, (3, 16)), torch.randint(0, 101, (3, 16))
    sdpa_calls = []
    real_sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: sdpa_calls.append(1) or real_sdpa(*a, **k))

    model.eval()  # SDPA without dropout (and every nn.Dropout the identity): the attention math alone
    _, sdpa_loss, sdpa = loss_and_grads(model, x, y)
    fast.for_cpu_training(model, fused_loss=False)
    model.train()  # the written-out path is for training with dropout > 0 (its dropout is the identity here)
    assert len(sdpa_calls) == 2  # one per layer
    _, loss, written = loss_and_grads(model, x, y)  # the attention's Dropout has p = 0.1 > 0: written out
    assert len(sdpa_calls) == 2, "the written-out attention was not taken"
    assert torch.allclose(loss, sdpa_loss, rtol=0, atol=1e-5)
    for name in sdpa:
        assert torch.allclose(sdpa[name], written[name], rtol=0, atol=1e-5), name


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("lead", [(1, 1), (2, 1), (8, 1), (4, 4), (1, 17), (3, 20)], ids=str)
def test_few_rows_linear_equals_nn_linear(lead, bias):
    """FewRowsLinear gives nn.Linear's output (to fp32 rounding) and shape for one row, a few rows (where it
    multiplies in the order (W x^T)^T) and many rows, with its state dict's keys and shapes unchanged."""
    torch.manual_seed(0)
    ours = FewRowsLinear(24, 40, bias=bias)
    ref = torch.nn.Linear(24, 40, bias=bias)
    ref.load_state_dict(ours.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    x = torch.randn(*lead, 24)
    with torch.no_grad():
        got, want = ours(x), ref(x)
    assert got.shape == want.shape == (*lead, 40)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("apply", [fast.for_cpu_training, fast.for_cpu_generation], ids=["training", "generation"])
def test_paths_keep_the_state_dict_and_the_eval_logits(apply):
    """Each path changes only classes: the state dict has the same keys and the very same tensors, the head stays
    tied, and eval-mode logits equal the plain model's (1e-5)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=101, dropout=0.1)).eval()
    before = model.state_dict()
    idx = torch.randint(0, 101, (3, 16))
    with torch.no_grad():
        plain, _ = model(idx)
        apply(model)
        got, _ = model(idx)
    after = model.state_dict()
    assert list(after) == list(before) and all(after[k] is before[k] or torch.equal(after[k], before[k]) for k in after)
    assert model.lm_head.weight is model.wte.weight
    assert torch.allclose(got, plain, rtol=0, atol=1e-5)
