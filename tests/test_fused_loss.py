"""fused_loss: the LM head and cross-entropy as one autograd step give the plain path's loss and gradients,
in less memory, and training takes it where it pays (eager fp32 on the CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nanogpt2.fused_loss import lm_head_loss
from nanogpt2.model import GPT, Dropout, GPTConfig
from nanogpt2.train_setup import build_run

from conftest import TINY_RUN, assert_loss_path_like_plain


@pytest.mark.parametrize("pad", [1, 64])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_fused_loss_equals_the_plain_path(pad, dropout):
    """Loss and every parameter's gradient equal the plain path's (fp32, 1e-6), with ignored (-1) targets, a
    padded vocabulary (whose rows get zero gradient from the head) and dropout; no logits come back."""
    fused = assert_loss_path_like_plain(lambda model: setattr(model, "fused_loss", True), pad, dropout)
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
        model.fused_loss = fused
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
        assert setup.raw_model.fused_loss == fused and (logits is None) == fused
        dropouts = [m for m in setup.raw_model.modules() if isinstance(m, Dropout)]
        assert dropouts and all(m.cheap_cpu_mask == fused for m in dropouts)
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
    model.use_cpu_training_paths(True)
    idx = torch.randint(0, 50, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
    assert logits is not None and torch.isfinite(loss)
    model.to(torch.bfloat16)
    logits, loss = model(idx, idx)
    loss.backward()
    assert logits is not None and logits.dtype == torch.bfloat16
