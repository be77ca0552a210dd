"""GPT.generate: the KV cache changes no token, long texts slide correctly, seeds repeat, EOT stops."""

from __future__ import annotations

import pytest
import torch

from nanogpt2 import GPT, GPTConfig, UserError
from nanogpt2.model import KVCache

TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64)


def tiny_gpt(seed: int = 0, **shape) -> GPT:
    """A small GPT whose weights are scaled so that logits spread over O(1): no near-ties for argmax."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, **shape})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, p.shape[-1] ** -0.5)
            else:  # LayerNorm weights around 1, biases around 0
                p.normal_(1.0 if "ln" in name and name.endswith("weight") else 0.0, 0.1)
    return model


def prompt(length: int, batch: int = 2, vocab: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("window_shift", [1, 3, None], ids=["shift1", "shift3", "default-shift"])
@pytest.mark.parametrize("prompt_len", [1, 5, 16, 40], ids=lambda n: f"prompt{n}")
def test_cache_equals_no_cache_greedy(prompt_len, window_shift):
    """Greedy generation with the KV cache equals recomputing the window every step, token for token (fp32),
    for prompts shorter than, equal to and longer than block_size, and outputs that outgrow it."""
    model = tiny_gpt()
    idx = prompt(prompt_len)
    cached = model.generate(idx, 30, temperature=0.0, window_shift=window_shift)
    uncached = model.generate(idx, 30, temperature=0.0, window_shift=window_shift, use_cache=False)
    assert cached.shape == (2, prompt_len + 30)
    assert torch.equal(cached[:, :prompt_len], idx)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("prompt_len", [3, 16, 40], ids=lambda n: f"prompt{n}")
def test_full_window_matches_plain_forward_loop(prompt_len):
    """With window_shift=1, cached generation reproduces the textbook loop: crop to the last
    block_size tokens, run the model, append the argmax."""
    model = tiny_gpt()
    idx = prompt(prompt_len)
    seq = idx
    with torch.no_grad():
        for _ in range(30):
            logits, _ = model(seq[:, -16:])
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(model.generate(idx, 30, temperature=0.0, window_shift=1), seq)


@pytest.mark.parametrize("batch", [1, 3, 8], ids=lambda b: f"batch{b}")
def test_greedy_matches_transformers_generate(hf_dir, batch):
    """On the same weights, our cached greedy tokens (found through the screened LM head: 40 tokens, fp32 on the
    CPU) equal transformers' own cached greedy generate, one row or several (whose decode steps take Linear's
    few-rows product order), and equal our uncached tokens."""
    hf_model, path = hf_dir(n_layer=2, n_head=3, n_embd=48, block_size=64, vocab_size=101)
    hf_model.generation_config.eos_token_id = None  # never stop early: compare all 40 tokens
    ours = GPT.from_pretrained(path).eval()
    idx = prompt(10, batch=batch, vocab=101)
    ref = hf_model.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=40, do_sample=False)
    assert ref.shape == (batch, 50)
    assert torch.equal(ours.generate(idx, 40, temperature=0.0), ref)
    assert torch.equal(ours.generate(idx, 40, temperature=0.0, use_cache=False), ref)


@pytest.mark.parametrize("chunks", [(16,), (5, 7, 1, 3), (1,) * 16, (10, 6)], ids=["one", "mixed", "ones", "two"])
def test_chunked_prefill_equals_full_forward(chunks):
    """Feeding a sequence through the cache in pieces, so that several new queries follow cached keys
    (SDPA's top-left is_causal would be wrong there), gives every position the full pass's logits."""
    model = tiny_gpt()
    idx = prompt(16)
    cache = KVCache(model.config.n_layer, capacity=16)
    pieces, at = [], 0
    with torch.no_grad():
        full, _ = model(idx)
        for n in chunks:
            logits, _ = model(idx[:, at : at + n], cache=cache)
            pieces.append(logits)
            at += n
    assert cache.length == 16
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-5)


def test_padded_vocab_never_sampled():
    """With pad_vocab_multiple=64 and huge padded embedding rows, cached logits still have vocab_size
    columns and thousands of hot samples never draw a padded id."""
    model = tiny_gpt(vocab_size=50, pad_vocab_multiple=64)
    with torch.no_grad():
        model.wte.weight[50:] = 100.0 * torch.randn(14, 32)  # would swamp any softmax they entered
        cache = KVCache(model.config.n_layer, capacity=4)
        logits, _ = model(prompt(4, vocab=50), cache=cache, last_only=True)
    assert logits.shape == (2, 1, 50)
    out = model.generate(prompt(4, batch=64, vocab=50), 40, temperature=2.0, seed=0)
    assert int(out.max()) < 50


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_same_seed_same_tokens(use_cache):
    """The same seed draws the same tokens every time; a different seed draws different ones."""
    model = tiny_gpt()
    idx = prompt(4)
    run = lambda seed: model.generate(idx, 40, temperature=1.0, top_k=20, top_p=0.95, seed=seed, use_cache=use_cache)
    assert torch.equal(run(123), run(123))
    assert not torch.equal(run(123), run(124))


def test_eot_ends_each_row():
    """A row that produces eot_id ends there and is padded with it; generation stops once every row
    has ended, and rows that never produce it run to max_new_tokens."""
    model = tiny_gpt()
    idx = prompt(3)
    free = model.generate(idx, 20, temperature=0.0)[:, 3:].tolist()
    eot = free[0][4]  # a token row 0 produces early on
    ends = [row.index(eot) if eot in row else None for row in free]
    length = 20 if None in ends else max(ends) + 1
    expected = [row[: (20 if end is None else end + 1)] + [eot] * 20 for row, end in zip(free, ends)]
    out = model.generate(idx, 20, temperature=0.0, eot_id=eot)[:, 3:].tolist()
    assert out == [row[:length] for row in expected]


def test_generation_turns_dropout_off_and_restores_mode():
    """A model in training mode with dropout generates the eval-mode tokens, and is left in training mode."""
    model = tiny_gpt(dropout=0.5)
    idx = prompt(5)
    reference = model.eval().generate(idx, 20, temperature=0.0)
    model.train()
    assert torch.equal(model.generate(idx, 20, temperature=0.0), reference)
    assert model.training and all(m.training for m in model.modules())


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=0), "top_k"),
        (dict(window_shift=0), "window_shift"),
        (dict(window_shift=17), "window_shift"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(idx=torch.zeros(1, 0, dtype=torch.long)), "at least one token"),
    ],
    ids=[
        "temperature<0",
        "temperature-nan",
        "top_p=0",
        "top_p>1",
        "top_k=0",
        "shift=0",
        "shift>block",
        "max_new<0",
        "empty-prompt",
    ],
)
def test_bad_arguments_are_refused(change, message):
    """Each meaningless generation setting raises a UserError that names it."""
    args = {"idx": prompt(3), "max_new_tokens": 5, **change}
    with pytest.raises(UserError, match=message):
        tiny_gpt().generate(**args)
