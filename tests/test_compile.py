"""torch.compile hygiene on the CPU (inductor): one graph for training, no recompiles across steps or the
train/eval switch, and a bounded number of compiles over a long generation."""

from __future__ import annotations

import pytest
import torch

from nanogpt2 import GPT, GPTConfig

from conftest import needs_cxx

pytestmark = [pytest.mark.slow, needs_cxx]  # each test compiles C++ kernels: tens of seconds on 2 busy cores


SHAPE = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=64)


def compile_counter():
    """A fresh dynamo state, and an inductor backend that counts the graphs it is given (one per compile)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    return CompileCounterWithBackend("inductor")


def batch(B: int = 2, T: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 64, (B, T), generator=g), torch.randint(0, 64, (B, T), generator=g)


@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["no-dropout", "dropout"])
def test_training_step_is_one_graph(dropout):
    """Forward and backward of a training step compile with fullgraph=True (any graph break raises), into
    exactly one graph, and the compiled loss and gradients equal eager ones (without dropout)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SHAPE, block_size=16, dropout=dropout)).train()
    counter = compile_counter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    x, y = batch()
    loss = compiled(x, y)[1]
    loss.backward()
    assert counter.frame_count == 1
    if dropout == 0.0:
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        eager = model(x, y)[1]
        eager.backward()
        torch.testing.assert_close(loss, eager, rtol=1e-5, atol=1e-5)
        for got, want in zip(grads, (p.grad for p in model.parameters())):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_no_recompiles_across_steps_and_train_eval_switch():
    """Training steps with an optimizer, then evaluation under no_grad, then training and evaluation again:
    one graph for training and one for evaluation, and no compile after the first of each."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SHAPE, block_size=16, dropout=0.1))
    counter = compile_counter()
    compiled = torch.compile(model, backend=counter)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step(seed):
        model.train()
        x, y = batch(seed=seed)
        compiled(x, y)[1].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def evaluate(seed):
        model.eval()
        with torch.no_grad():
            return compiled(*batch(seed=seed))[1]

    train_step(0)
    train_step(1)
    assert counter.frame_count == 1, "a second training step recompiled"
    evaluate(2)
    assert counter.frame_count == 2  # evaluation (no dropout, no autograd) is its own graph
    train_step(3)
    evaluate(4)
    train_step(5)
    assert counter.frame_count == 2, "switching between training and evaluation recompiled"


@pytest.mark.parametrize("batch_size", [1, 3])
def test_generation_compiles_a_bounded_number_of_times(batch_size):
    """A 200-token cached generation through model.compile() compiles at most 3 graphs, the same number as a
    20-token one: the prefill, the first decode step, and one decode graph for every later cache length (dynamo
    makes the length symbolic once it has changed). It gives the eager tokens."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SHAPE, block_size=256)).eval()
    with torch.no_grad():  # weights of scale 1/sqrt(fan_in): logits spread over O(1), no near-ties for argmax
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, p.shape[-1] ** -0.5)
    prompt = torch.randint(0, 64, (batch_size, 16), generator=torch.Generator().manual_seed(1))
    eager = model.generate(prompt, 200, temperature=0.0)

    counts = []
    for new_tokens in (20, 200):
        torch._dynamo.reset()
        counter = compile_counter()
        model.compile(backend=counter)  # in place: generate's calls of self(...) go through the compiled forward
        out = model.generate(prompt, new_tokens, temperature=0.0)
        counts.append(counter.frame_count)
    assert counts[0] == counts[1] <= 3, f"{counts} compiles for 20 and 200 tokens"
    assert torch.equal(out, eager)
