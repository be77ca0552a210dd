"""The model is GPT-2: same logits as transformers on the same weights, causal, right size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nanogpt2 import GPT, GPTConfig

from conftest import make_hf_model, save_hf_dir

SHAPES = {  # n_layer, n_head, n_embd, block_size, vocab_size
    "tiny-3-heads": dict(n_layer=2, n_head=3, n_embd=48, block_size=64, vocab_size=101),
    "odd-vocab-6-heads": dict(n_layer=3, n_head=6, n_embd=96, block_size=32, vocab_size=257),
    "one-head": dict(n_layer=1, n_head=1, n_embd=16, block_size=16, vocab_size=50),
}


def _compare(hf_model, ours, T, B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, ours.config.vocab_size, (B, T), generator=g)
    targets = torch.cat([idx[:, 1:], torch.full((B, 1), -1)], dim=1)  # next token; last ignored
    with torch.no_grad():
        ref = hf_model(idx, labels=idx)  # transformers shifts the labels itself
        logits, loss = ours(idx, targets)
    assert logits.shape == ref.logits.shape
    assert (logits - ref.logits).abs().max().item() <= 1e-4
    assert abs(loss.item() - ref.loss.item()) <= 1e-4


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_logits_match_transformers(hf_dir, shape, fmt):
    """Loaded through from_pretrained(dir), our logits and loss equal transformers' to 1e-4 (fp32)."""
    hf_model, path = hf_dir(fmt, **SHAPES[shape])
    ours = GPT.from_pretrained(path).eval()
    _compare(hf_model, ours, T=SHAPES[shape]["block_size"])


@pytest.fixture(scope="module")
def hf_124m():
    return make_hf_model(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_logits_match_transformers_124m(hf_124m, tmp_path, fmt):
    """The full GPT-2 small shape (124M) matches transformers too, from either file format."""
    path = save_hf_dir(hf_124m, tmp_path / "gpt2", fmt)
    ours = GPT.from_pretrained(path).eval()
    assert ours.config == GPTConfig()  # read from config.json: GPT-2 small's shape
    _compare(hf_124m, ours, T=48)


def test_loaded_model_ties_head_to_embedding(hf_dir):
    """After loading, the LM head is the token embedding (one tensor), as in GPT-2."""
    _, path = hf_dir(**SHAPES["tiny-3-heads"])
    model = GPT.from_pretrained(path)
    assert model.lm_head.weight is model.wte.weight


def test_block_size_can_be_cropped(hf_dir):
    """block_size=16 keeps the first 16 positions: logits equal the full model's on 16 tokens."""
    hf_model, path = hf_dir(**SHAPES["tiny-3-heads"])
    cropped = GPT.from_pretrained(path, block_size=16, dropout=0.1).eval()
    assert cropped.config.block_size == 16 and cropped.wpe.weight.shape[0] == 16
    assert cropped.config.dropout == 0.1
    _compare(hf_model, cropped, T=16)


def test_causality():
    """Changing the token at position t never changes the logits at positions < t."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=24, vocab_size=64)).eval()
    idx = torch.randint(0, 64, (3, 24))
    with torch.no_grad():
        base, _ = model(idx)
        for t in (0, 7, 23):
            changed = idx.clone()
            changed[:, t] = (changed[:, t] + 1) % 64
            logits, _ = model(changed)
            assert torch.equal(logits[:, :t], base[:, :t])
            assert not torch.allclose(logits[:, t], base[:, t])


# Published sizes of OpenAI's checkpoints (Hugging Face model cards; the GPT-2 paper's
# 117M/345M/762M/1542M were miscounted, as OpenAI later noted).
PUBLISHED = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_counts_match_published(name):
    """Our four GPT-2 shapes have exactly the published parameter counts (tied head counted once)."""
    with torch.device("meta"):
        model = GPT(GPTConfig.gpt2(name))
    assert model.num_params() == PUBLISHED[name]
    c = model.config
    assert model.num_params(non_embedding=True) == PUBLISHED[name] - (c.vocab_size + c.block_size) * c.n_embd


def test_padded_vocab_is_never_predicted():
    """With pad_vocab_multiple=64 the table has 50304 rows, but logits stop at 50257 and
    inflating the padded rows' weights changes neither logits nor loss."""
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=50257, pad_vocab_multiple=64)
    model = GPT(cfg).eval()
    assert model.wte.weight.shape[0] == 50304
    idx = torch.randint(0, 50257, (2, 16))
    targets = torch.randint(0, 50257, (2, 16))
    with torch.no_grad():
        logits, loss = model(idx, targets)
        model.wte.weight[50257:] = 100.0  # padded rows: would dominate any softmax they entered
        logits2, loss2 = model(idx, targets)
    assert logits.shape == (2, 16, 50257)
    assert torch.equal(logits, logits2) and torch.equal(loss, loss2)
    assert torch.allclose(loss, F.cross_entropy(logits.view(-1, 50257), targets.view(-1)))


def test_loss_ignores_minus_one_targets():
    """Targets of -1 are left out of the mean: the loss equals the loss over the other positions."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=8, vocab_size=40)).eval()
    idx = torch.randint(0, 40, (1, 8))
    targets = torch.randint(0, 40, (1, 8))
    masked = targets.clone()
    masked[0, 4:] = -1
    with torch.no_grad():
        logits, loss = model(idx, masked)
    assert torch.allclose(loss, F.cross_entropy(logits[0, :4], targets[0, :4]))


def test_init_follows_gpt2():
    """Weights start at std 0.02, residual projections at 0.02/sqrt(2*n_layer), biases at 0."""
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=8, n_head=4, n_embd=256, block_size=64, vocab_size=2000)
    model = GPT(cfg)
    assert abs(model.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.002
    assert abs(model.h[0].mlp.c_proj.weight.std().item() - 0.02 / 4) < 0.0005
    assert abs(model.wte.weight.std().item() - 0.02) < 0.002
    assert model.h[0].mlp.c_fc.bias.abs().max().item() == 0.0


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(n_embd=50, n_head=3), "divisible by n_head"),
        (dict(n_layer=0), "n_layer must be a positive integer"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_bad_config_is_refused(kwargs, words):
    """Impossible shapes are refused by GPTConfig with a message naming the field."""
    from nanogpt2 import UserError

    with pytest.raises(UserError, match=words):
        GPTConfig(**kwargs)
