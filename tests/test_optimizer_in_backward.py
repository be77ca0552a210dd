"""optimizer_in_backward=True: each parameter is updated during backward and its gradient freed at once; the run is
the plain run's, resumes exactly, and the combinations that cannot work are refused."""

from __future__ import annotations

import pytest
import torch

from nanogpt2.errors import UserError
from nanogpt2.model import GPT, GPTConfig
from nanogpt2.train.config import TrainConfig
from nanogpt2.train.optim import make_optimizer
from nanogpt2.train.trainer import train

from conftest import TINY_RUN, assert_resume_is_exact, assert_trains_like_plain


def test_gradients_never_coexist_and_every_weight_is_updated():
    """During one backward pass at most one parameter holds a gradient at any time (each is freed right after its
    update), and afterwards every parameter has moved and none holds a gradient."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64))
    optimizer = make_optimizer(model, 1e-2, 0.1, (0.9, 0.95), "cpu", in_backward=True)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    most = 0

    def count(_):  # registered after the optimizer's hook, so it runs after that parameter's update
        nonlocal most
        most = max(most, sum(p.grad is not None for p in params))

    for p in params:
        p.register_post_accumulate_grad_hook(count)
    idx = torch.randint(0, 64, (2, 16))
    model(idx, idx)[1].backward()
    optimizer.step()  # nothing left to do
    assert most == 0  # our hook runs after the update freed the gradient: none was left alive
    assert all(p.grad is None for p in params)
    assert all(not torch.equal(a, p.detach()) for a, p in zip(before, params))


@pytest.mark.parametrize("optimizer", ["adamw", "adamw8bit"])
def test_trains_exactly_like_the_plain_step(shakespeare_data, tmp_path, optimizer):
    """Three steps with the update fused into backward end with the weights (1e-6) and losses of three plain steps
    (one micro-batch, no clipping), with PyTorch's AdamW and with torchao's 8-bit AdamW."""
    if optimizer == "adamw8bit":
        pytest.importorskip("torchao.optim")
    both = ["--grad_clip=0", f"--optimizer={optimizer}", "--n_embd=64"]
    assert_trains_like_plain(shakespeare_data, tmp_path, "--optimizer_in_backward=True", both=both)


@pytest.mark.slow
def test_resume_is_exact_with_bf16_weights(shakespeare_data, tmp_path):
    """6 steps straight equal 3 + resume + 3 with the update in backward, bf16 weights and 8-bit moments."""
    pytest.importorskip("torchao.optim")
    common = [
        *TINY_RUN,
        "--n_embd=64",
        f"--dataset={shakespeare_data}",
        "--eval_interval=3",
        "--lr_decay_iters=6",
        "--grad_clip=0",
        "--optimizer=adamw8bit",
        "--param_dtype=bfloat16",
        "--optimizer_in_backward=True",
    ]
    assert_resume_is_exact(common, tmp_path, steps=6)


@pytest.mark.parametrize(
    "settings, problem",
    [
        ({"gradient_accumulation_steps": 2, "grad_clip": 0.0}, "needs gradient_accumulation_steps=1"),
        ({}, "needs grad_clip=0"),
        ({"grad_clip": 0.0, "compile": True}, "saves no memory under compile"),
    ],
)
def test_impossible_combinations_are_refused(settings, problem):
    """Accumulation, global-norm clipping or torch.compile with the update in backward is one clear error."""
    with pytest.raises(UserError, match=problem):
        TrainConfig(optimizer_in_backward=True, **settings)


def test_switching_on_resume_is_refused(shakespeare_data, tmp_path):
    """A run trained with the plain optimizer cannot continue with optimizer_in_backward (its state's layout
    differs): one error naming the setting."""
    out = tmp_path / "run"
    train([*TINY_RUN, f"--dataset={shakespeare_data}", f"--out_dir={out}", "--max_iters=1", "--eval_interval=1"])
    with pytest.raises(UserError, match="optimizer_in_backward"):
        train(
            [f"--out_dir={out}", "--init_from=resume", "--max_iters=2", "--grad_clip=0", "--optimizer_in_backward=True"]
        )


def test_dropping_the_optimizer_frees_the_model():
    """The hooks reach their optimizers weakly: once the model and the optimizer are dropped, the parameters are
    freed (a strong hook -> optimizer -> parameter chain, held in autograd's table, would keep them forever)."""
    import gc
    import weakref

    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=64))
    optimizer = make_optimizer(model, 1e-2, 0.1, (0.9, 0.95), "cpu", in_backward=True)
    idx = torch.randint(0, 64, (2, 16))
    model(idx, idx)[1].backward()
    weight = weakref.ref(model.wte.weight)
    del model, optimizer
    gc.collect()
    assert weight() is None
