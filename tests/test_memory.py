"""The training-memory model (nanogpt2/flops/memory.py), checked on the CPU.

What can be checked without a GPU is checked against PyTorch itself: the bytes autograd
saves for the backward pass (seen through torch.autograd.graph.saved_tensors_hooks, each
storage once, parameters left out) and the bytes AdamW keeps. The peak as a whole is
measured against torch.cuda.max_memory_allocated by bench/memory.py on a GPU.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from nanogpt2.errors import UserError
from nanogpt2.flops.memory import estimate_training_memory, max_batch_size
from nanogpt2.model import GPT, GPTConfig

GiB = 2**30


def saved_for_backward(config: GPTConfig, batch: int, seq_len: int, autocast: bool, math: bool) -> int:
    """Bytes of the non-parameter tensors autograd saves in one forward pass of our model."""
    torch.manual_seed(0)
    model = GPT(config)
    idx = torch.randint(0, config.vocab_size, (batch, seq_len))
    targets = torch.randint(0, config.vocab_size, (batch, seq_len))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = s.nbytes()  # views of one tensor share a storage: count it once
        return t

    attention = sdpa_kernel([SDPBackend.MATH]) if math else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), attention:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(idx, targets)
    return sum(storages.values())


SHAPES = [  # (config, batch, seq_len)
    (GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=101), 2, 64),
    (GPTConfig(n_layer=3, n_head=3, n_embd=48, block_size=64, vocab_size=97, pad_vocab_multiple=64, bias=False), 3, 40),
]


@pytest.mark.parametrize("config,batch,seq_len", SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("attention", ["flash", "math"])
def test_saved_activations_match_autograd(config, batch, seq_len, dtype, attention):
    """The activation and bf16-weight-copy terms equal, byte for byte, what autograd saves for the backward pass."""
    got = saved_for_backward(config, batch, seq_len, autocast=dtype == "bfloat16", math=attention == "math")
    est = estimate_training_memory(config, batch, seq_len, dtype=dtype, attention=attention)
    assert est.activations + est.low_precision_weights == got


def test_optimizer_and_parameter_terms_match_adamw():
    """Weights, gradients and AdamW's moments take 4 + 4 + 8 bytes per parameter, as a real AdamW step allocates them."""
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=50)
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters())
    _, loss = model(torch.randint(0, 50, (2, 32)), torch.randint(0, 50, (2, 32)))
    loss.backward()
    opt.step()
    est = estimate_training_memory(config, 2, 32)
    moments = sum(t.nbytes for state in opt.state.values() for k, t in state.items() if k != "step")
    assert est.optimizer == moments
    assert est.weights == sum(p.nbytes for p in model.parameters())
    assert est.gradients == sum(p.grad.nbytes for p in model.parameters())


CASES = [  # (model, seq_len, GiB, options)
    ("gpt2", 1024, 12, {}), ("gpt2", 1024, 12, {"checkpointing": True}), ("gpt2-medium", 1024, 12, {"grad_accum": 16}),
    ("gpt2-medium", 512, 16, {"dtype": "float32"}), ("gpt2-large", 1024, 24, {"checkpointing": True, "grad_accum": 4}),
    ("gpt2", 1024, 80, {"ddp": True, "attention": "math"}), ("gpt2-xl", 1024, 80, {"grad_accum": 2}),
]


@pytest.mark.parametrize("name,seq_len,gib,options", CASES)
def test_largest_micro_batch_fits_and_one_more_does_not(name, seq_len, gib, options):
    """max_batch_size returns a batch that fits the GPU, and one more sequence would not fit."""
    config = GPTConfig.gpt2(name, dropout=0.1)
    b = max_batch_size(config, gib * GiB, seq_len, **options)
    assert b >= 1
    assert estimate_training_memory(config, b, seq_len, **options).fits(gib * GiB)
    assert not estimate_training_memory(config, b + 1, seq_len, **options).fits(gib * GiB)


def test_nothing_fits_when_the_model_alone_is_too_big():
    """GPT-2 XL's weights, gradients and AdamW moments (16 B x 1.56B) exceed 12 GiB: no micro-batch fits, 0."""
    assert max_batch_size(GPTConfig.gpt2("gpt2-xl"), 12 * GiB) == 0


def test_terms_respond_to_their_settings():
    """Bigger batches cost more; checkpointing saves block activations; accumulation holds the gradients; DDP adds buckets."""
    config = GPTConfig.gpt2("gpt2")
    base = estimate_training_memory(config, 4)
    assert estimate_training_memory(config, 8).peak > base.peak
    ckpt = estimate_training_memory(config, 4, checkpointing=True)
    assert ckpt.block_activations < base.block_activations / 5 and ckpt.peak < base.peak
    accum = estimate_training_memory(config, 4, grad_accum=2)
    assert accum.phases["backward (loss gradient)"] - base.phases["backward (loss gradient)"] == base.gradients
    ddp = estimate_training_memory(config, 4, ddp=True)
    assert ddp.peak - base.peak == base.weights  # one fp32 copy of every gradient
    held = estimate_training_memory(config, 4, hold_logits=True)
    assert held.peak - base.peak == 2 * 4 * 1024 * config.padded_vocab_size


@pytest.mark.parametrize("kwargs", [
    {"batch_size": 0}, {"batch_size": 2.5}, {"seq_len": 2048}, {"dtype": "int8"}, {"attention": "sparse"},
    {"grad_accum": 0},
])
def test_bad_settings_are_user_errors(kwargs):
    """Impossible settings (no batch, longer than the context, unknown dtype or attention) raise UserError."""
    args = {"batch_size": 1, **kwargs}
    with pytest.raises(UserError):
        estimate_training_memory(GPTConfig.gpt2("gpt2"), args.pop("batch_size"), **args)
