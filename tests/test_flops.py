"""The FLOP and parameter counts in nanogpt2/flops/counting.py, checked against the model itself.

The reference is torch.utils.flop_counter.FlopCounterMode running our GPT's forward and
backward passes: it counts every matmul PyTorch dispatches. On the CPU the fused attention
kernel is invisible to it, so attention is forced through SDPA's math backend, which
decomposes into counted batched matmuls (test_math_backend_exposes_attention proves it).
Large shapes run on the "meta" device: shapes only, no arithmetic, so GPT-2 at full size
costs nothing, while the small shapes also run for real on the CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nanogpt2.errors import UserError
from nanogpt2.flops import (
    count_params,
    forward_matmul_flops,
    kaplan_flops_per_token,
    mfu,
    tokens_per_second,
    training_flops,
    training_flops_per_token,
)
from nanogpt2.model import GPT, GPTConfig

GPT2_SIZES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


def counted_flops(config: GPTConfig, batch: int, seq_len: int, device: str, math_attention: bool = True) -> int:
    """Matmul FLOPs FlopCounterMode sees in one forward + backward pass of our model."""
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT(config)
        idx = torch.randint(0, config.vocab_size, (batch, seq_len))
        targets = torch.randint(0, config.vocab_size, (batch, seq_len))
    counter = FlopCounterMode(display=False)
    backend = [SDPBackend.MATH] if math_attention else [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]
    with sdpa_kernel(backend), counter:
        _, loss = model(idx, targets)
        loss.backward()
    return counter.get_total_flops()


SHAPES = [  # (config, batch, seq_len, device)
    (GPTConfig(n_layer=2, n_head=3, n_embd=48, block_size=64, vocab_size=101), 2, 64, "cpu"),
    (
        GPTConfig(n_layer=3, n_head=4, n_embd=64, block_size=128, vocab_size=97, pad_vocab_multiple=64, bias=False),
        3,
        100,
        "cpu",
    ),
    (GPTConfig(n_layer=1, n_head=1, n_embd=32, block_size=16, vocab_size=50), 1, 7, "cpu"),
    (GPTConfig.gpt2("gpt2", pad_vocab_multiple=64), 1, 1024, "meta"),  # the 124M pretraining shape
    (GPTConfig.gpt2("gpt2"), 2, 512, "meta"),
    (GPTConfig.gpt2("gpt2-medium"), 1, 1024, "meta"),
    (GPTConfig.gpt2("gpt2-xl", block_size=256), 1, 256, "meta"),
]


@pytest.mark.parametrize("config,batch,seq_len,device", SHAPES)
def test_exact_count_matches_flop_counter(config, batch, seq_len, device):
    """The exact per-token count times the tokens equals what FlopCounterMode counts for forward + backward."""
    counted = counted_flops(config, batch, seq_len, device)
    ours = training_flops_per_token(config, seq_len) * batch * seq_len
    # Equal to the FLOP, not just within the 1%: a padded-vocabulary slip in the LM head
    # of GPT-2 small would be only 0.03%.
    assert ours == counted


def test_math_backend_exposes_attention():
    """On the CPU the fused attention kernel is not counted; the math backend's count exceeds it by exactly the
    attention matmuls."""
    config, batch, seq_len = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=64), 2, 64
    with_attention = counted_flops(config, batch, seq_len, "cpu", math_attention=True)
    fused = counted_flops(config, batch, seq_len, "cpu", math_attention=False)
    parts = forward_matmul_flops(config, seq_len)
    assert with_attention - fused == 3 * batch * (parts["attention_scores"] + parts["attention_values"]) > 0


@pytest.mark.parametrize("name", GPT2_SIZES)
def test_param_counts_match_the_model(name):
    """count_params gives the total and non-embedding counts the built model has, for every GPT-2 size."""
    config = GPTConfig.gpt2(name)
    with torch.device("meta"):
        model = GPT(config)
    counts = count_params(config)
    assert counts.total == model.num_params()
    assert counts.non_embedding == model.num_params(non_embedding=True)


@pytest.mark.parametrize("name", GPT2_SIZES)
def test_six_n_is_kaplans_count(name):
    """6N uses Kaplan et al.'s N, which their eq. 2.1 approximates as 12 n_layer d_model^2 (within 1% for
    GPT-2's sizes)."""
    config = GPTConfig.gpt2(name)
    with torch.device("meta"):
        n = GPT(config).num_params(non_embedding=True)
    assert kaplan_flops_per_token(config) == 6 * n
    assert kaplan_flops_per_token(config) == pytest.approx(6 * 12 * config.n_layer * config.n_embd**2, rel=0.01)


def test_exact_count_is_palm_formula():
    """Per token, forward + backward is PaLM's 6N + 12 L T C with N the matmul weights (tied LM head in,
    positions out)."""
    for config, seq_len in [(GPTConfig.gpt2("gpt2", pad_vocab_multiple=64), 1024), (GPTConfig.gpt2("gpt2-large"), 333)]:
        L, C = config.n_layer, config.n_embd
        matmul_weights = L * 12 * C * C + config.padded_vocab_size * C
        assert training_flops_per_token(config, seq_len) == 6 * matmul_weights + 12 * L * seq_len * C


def test_total_flops_and_mfu_arithmetic():
    """The published llm.c GPT-2 (124M) run, 524,288 tokens per ~0.3 s step on 8 A100s (312 TFLOP/s), comes out
    at its quoted ~60% MFU."""
    # karpathy/llm.c scripts/run_gpt2_124M.sh: 18,865 steps of 524,288 tokens, ~300 ms/step on
    # 8X A100 80GB SXM; discussion #481 quotes "up to ~60% model flops utilization".
    config = GPTConfig.gpt2("gpt2", pad_vocab_multiple=64)
    fpt = training_flops_per_token(config, 1024)
    per_gpu = 524_288 / 0.3 / 8
    assert mfu(fpt, per_gpu, 312e12) == pytest.approx(0.60, abs=0.01)
    assert tokens_per_second(fpt, 312e12, mfu(fpt, per_gpu, 312e12)) == pytest.approx(per_gpu)
    assert training_flops(config, 1024, 18_865 * 524_288) == fpt * 18_865 * 524_288


@pytest.mark.parametrize(
    "call",
    [
        lambda: mfu(1e9, -1.0, 1e14),
        lambda: mfu(1e9, 1e4, 0.0),
        lambda: mfu(float("nan"), 1e4, 1e14),
        lambda: tokens_per_second(1e9, 1e14, 0.0),
        lambda: tokens_per_second(1e9, 1e14, 1.5),
        lambda: training_flops_per_token(GPTConfig(block_size=64), 65),
        lambda: training_flops_per_token(GPTConfig(), 0),
        lambda: training_flops(GPTConfig(), 1024, 0),
    ],
)
def test_bad_arguments_are_user_errors(call):
    """Impossible inputs (negative rates, zero peak, MFU outside (0, 1], sequences longer than the model) raise
    UserError."""
    with pytest.raises(UserError):
        call()
