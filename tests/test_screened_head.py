"""ScreenedHead: a bf16 screen with a proven error bound finds exactly the LM head's top tokens, so generation
through it yields the tokens of the plain fp32 head."""

from __future__ import annotations

import pytest
import torch

from nanogpt2.fast.screened_head import ScreenedHead, at_most_in_bf16
from nanogpt2.model import GPT, GPTConfig

U32 = 2.0**-24


def hidden_states(kind: str, B: int, C: int, g: torch.Generator) -> torch.Tensor:
    """Final hidden states of three kinds: unit-scale noise, large states, and states with a large shared
    component (which makes every logit large and negative, as OpenAI's GPT-2 does: the bf16 storage
    term of the bound then dominates)."""
    h = torch.randn(B, C, generator=g)
    if kind == "large":
        return 40 * h
    if kind == "shared":
        return h + 30 * torch.randn(1, C, generator=g)
    return h


@pytest.mark.parametrize("kind", ["unit", "large", "shared", "tiny"])
@pytest.mark.parametrize("B", [1, 5])
def test_screen_error_is_within_its_bound(kind, B):
    """Against float64 arithmetic, every approximate logit of a row is within the row's bound E, after
    the plain fp32 head's own error (at most gamma_C |h| |w_v|, plus the flush-to-zero term for values
    below 2^-126): the fact the top-k proof rests on. "tiny" puts every product below fp32's normal
    range, where the bf16 product flushes them all to zero."""
    g = torch.Generator().manual_seed(0)
    V, C = 3000, 96
    scale = 1e-20 if kind == "tiny" else 1.0
    w = 0.3 * scale * torch.randn(V, C, generator=g)
    head = ScreenedHead(w)
    h = scale * hidden_states(kind, B, C, g)
    exact = h.double() @ w.double().t()
    approx, bound = head.screen(h)
    plain = h @ w.t()
    gamma = C * U32 / (1 - C * U32)
    h_norm, w_norm = h.double().norm(dim=1, keepdim=True), w.double().norm(dim=1)
    plain_bound = gamma * h_norm * w_norm + 2.0**-126 * (C + 1 + C**0.5 * (h_norm + w_norm))
    assert ((plain.double() - exact).abs() <= plain_bound).all()
    assert bound.shape == (B, 1)
    assert ((approx.double() - exact).abs() + plain_bound <= bound).all()  # a - z within E, via the exact value


def test_thresholds_round_down_to_bf16():
    """at_most_in_bf16 never rounds a threshold up, over random values of every scale, both signs, zero and
    values near bf16's smallest, so that comparing bf16 logits with it keeps every token at or above it."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(100_000, generator=g, dtype=torch.float64) * torch.logspace(-40, 38, 100_000, dtype=torch.float64)
    x = torch.cat([x, torch.tensor([0.0, 1e-45, -1e-45, 2.0**-133, 1.0, -1.0], dtype=torch.float64)])
    below = at_most_in_bf16(x)
    assert below.dtype == torch.bfloat16
    assert (below.double() <= x).all()
    assert ((x - below.double()).abs() <= 2.0**-6 * x.abs() + 2.0**-110).all()  # and not far below


@pytest.mark.parametrize("kind", ["unit", "large", "shared"])
@pytest.mark.parametrize("k", [1, 7, 100])
def test_screen_keeps_exactly_the_plain_top_k(kind, k):
    """For every row, the k largest screened logits are the plain head's k largest tokens with their fp32
    values (1e-5 relative), while most of the vocabulary is never computed (-inf)."""
    g = torch.Generator().manual_seed(1)
    V, C = 5000, 64
    w = 0.3 * torch.randn(V, C, generator=g)
    h = hidden_states(kind, 4, C, g)
    out = ScreenedHead(w).logits(h, k)
    plain = h @ w.t()
    top_plain, top_screened = plain.topk(k, dim=1), out.topk(k, dim=1)
    assert torch.equal(top_plain.indices.sort(dim=1).values, top_screened.indices.sort(dim=1).values)
    assert torch.allclose(top_plain.values, top_screened.values, rtol=1e-5, atol=0)
    assert (out == float("-inf")).float().mean() > 0.5


def test_a_flat_screen_computes_every_logit():
    """When the bound cannot tell tokens apart (all logits equal), the head returns every fp32 logit."""
    w = torch.randn(200, 16)
    out = ScreenedHead(w).logits(torch.zeros(2, 16), 1)
    assert torch.equal(out, torch.zeros(2, 200))


@pytest.mark.parametrize(
    "options",
    [dict(temperature=0.0), dict(temperature=0.9, top_k=20, seed=3), dict(temperature=1.0, top_k=5, top_p=0.8, seed=4)],
    ids=["greedy", "top-k", "top-k + top-p"],
)
def test_generation_through_the_screen_yields_the_plain_tokens(options):
    """generate_tokens through the screened head (screen=True: taken wherever it is exact, whatever the CPU)
    yields the same tokens as with every logit computed in fp32 (screen=False), greedy and sampled with a seed,
    over 60 tokens at batch 3 and a padded vocabulary."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=500, pad_vocab_multiple=64))
    prompt = torch.randint(0, 500, (3, 4))
    screened = model.generate(prompt, 60, screen=True, **options)
    plain = model.generate(prompt, 60, screen=False, **options)
    assert torch.equal(screened, plain)


@pytest.mark.parametrize(
    "setting, screen",
    [
        ("autocast", True),
        ("fp32 matmuls in bf16", True),
        ("compiled", True),
        ("few tokens", None),
        ("bf16 not native", None),
        ("sampling every token", True),
    ],
)
def test_generation_keeps_the_plain_head_where_the_screen_does_not_hold_or_pay(monkeypatch, setting, screen):
    """Under CPU bf16 autocast, or with fp32 matmuls allowed to run in bf16, the head's logits are not the fp32
    products the bound is about, and a compiled model would be bypassed: the screen is refused even when asked
    for. Where it would not pay (fewer than WORTH_IT_TOKENS new tokens, or a CPU without native bf16 products)
    it is not taken by default, and with no top-k nothing can be screened. In each case no ScreenedHead is
    built, and the tokens equal screen=False's."""
    import contextlib

    from nanogpt2.fast import screened_head

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=64, vocab_size=300))
    prompt = torch.randint(0, 300, (2, 3))
    new = screened_head.WORTH_IT_TOKENS - 1 if setting == "few tokens" else 40
    options = dict(temperature=1.0, seed=0) if setting == "sampling every token" else dict(temperature=0.0)
    plain = model.generate(prompt, new, screen=False, **options)

    def refuse(weight):
        raise AssertionError("a ScreenedHead was built")

    monkeypatch.setattr(screened_head, "ScreenedHead", refuse)
    native = setting != "bf16 not native"
    monkeypatch.setattr(screened_head, "bf16_matmuls_are_native", lambda: native)
    if setting == "compiled":
        model.compile()  # the model's own forward, compiled; the loop's hidden_states call would bypass it
        model._compiled_call_impl = lambda *a, **k: model._call_impl(*a, **k)  # this test runs it eagerly
    context = torch.autocast("cpu", dtype=torch.bfloat16) if setting == "autocast" else contextlib.nullcontext()
    previous = torch.get_float32_matmul_precision()
    if setting == "fp32 matmuls in bf16":
        torch.set_float32_matmul_precision("medium")
    try:
        with context:
            screened = model.generate(prompt, new, screen=screen, **options)
            if setting in ("autocast", "fp32 matmuls in bf16"):  # the plain head under the same setting
                plain = model.generate(prompt, new, screen=False, **options)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert torch.equal(screened, plain)


def test_the_screen_is_taken_by_default_where_bf16_products_are_native(monkeypatch):
    """On a CPU that multiplies bf16 in hardware, generating WORTH_IT_TOKENS or more greedy tokens builds the
    screen by default (screen=None); on one that does not, it is not built."""
    from nanogpt2.fast import screened_head

    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=64, vocab_size=300))
    for native in (True, False):
        monkeypatch.setattr(screened_head, "bf16_matmuls_are_native", lambda native=native: native)
        head = screened_head.screened_head_for(model, 1, screened_head.WORTH_IT_TOKENS)
        assert (head is not None) == native


@pytest.fixture
def matmul_settings():
    """Restores every fp32 matmul precision setting a test changes (torch >= 2.9's per-backend settings)."""
    b = torch.backends
    if not hasattr(getattr(b.mkldnn, "matmul", None), "fp32_precision"):
        pytest.skip("this torch has no per-backend fp32 matmul settings")
    saved = (b.cuda.matmul.fp32_precision, b.mkldnn.matmul.fp32_precision, b.mkldnn.fp32_precision)
    yield
    b.cuda.matmul.fp32_precision, b.mkldnn.matmul.fp32_precision, b.mkldnn.fp32_precision = saved


def _set_matmul_precision(setting: str) -> None:
    from nanogpt2.common.runtime import enable_tf32

    if setting == "TF32 on CUDA":
        enable_tf32()  # what train.py and the benches do on a GPU; it makes get_float32_matmul_precision() "high"
    elif setting in ("high", "medium"):
        torch.set_float32_matmul_precision(setting)
    elif setting == "oneDNN in bf16":
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"


@pytest.mark.parametrize(
    "setting, fp32",
    [("default", True), ("TF32 on CUDA", True), ("high", False), ("medium", False), ("oneDNN in bf16", False)],
)
def test_the_screen_follows_the_setting_that_governs_cpu_matmuls(matmul_settings, setting, fp32):
    """fp32_matmuls_are_fp32 reads the CPU's own matmul setting: allowing TF32 on CUDA leaves CPU matmuls in
    fp32 (checked against float64: within gamma_C |x| |w|), so the screen stays on; allowing oneDNN reduced
    precision, directly or through set_float32_matmul_precision, turns it off."""
    from nanogpt2.fast.screened_head import fp32_matmuls_are_fp32

    _set_matmul_precision(setting)
    assert fp32_matmuls_are_fp32() == fp32
    if fp32:
        g = torch.Generator().manual_seed(3)
        x, w = torch.randn(4, 512, generator=g), torch.randn(300, 512, generator=g)
        gamma = 512 * U32 / (1 - 512 * U32)
        error = (x @ w.t()).double() - x.double() @ w.double().t()
        assert (error.abs() <= gamma * x.double().norm(dim=1, keepdim=True) * w.double().norm(dim=1)).all()
