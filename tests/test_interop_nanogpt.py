"""nanoGPT's checkpoints: a ckpt.pt laid out as nanoGPT's train.py writes one (built here from its documented
layout: model, model_args, optimizer, iter_num, best_val_loss, config) loads everywhere init_from does, with
transformers' logits, exports to transformers, and refuses to resume in one line."""

from __future__ import annotations

import pytest
import torch

from nanogpt2.errors import UserError
from nanogpt2.loading import load_model
from nanogpt2.train.trainer import train

from conftest import make_hf_model

CONV1D = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")


def nanogpt_checkpoint(hf, *, compiled: bool, bias: bool, padded: bool, flash: bool) -> dict:
    """transformers' GPT-2 weights in nanoGPT's layout: nn.Linear (out, in) weights under transformer., a tied
    lm_head, vocab padded to 50304 with extra rows, _orig_mod. when compiled, attn.bias mask buffers without
    flash attention, no bias tensors when bias=False (then hf must have zero biases)."""
    cfg = hf.config
    state = {}
    for name, tensor in hf.state_dict().items():
        if name == "lm_head.weight" or (name.endswith(".bias") and not bias):
            continue
        t = tensor.t().contiguous() if name.endswith(CONV1D) else tensor.clone()
        if name == "transformer.wte.weight" and padded:
            t = torch.cat([t, torch.randn(50304 - t.size(0), t.size(1))])
        state[name] = t
    if not flash:
        causal = torch.tril(torch.ones(cfg.n_positions, cfg.n_positions)).view(1, 1, cfg.n_positions, -1)
        for layer in range(cfg.n_layer):
            state[f"transformer.h.{layer}.attn.bias"] = causal
    state["lm_head.weight"] = state["transformer.wte.weight"]
    if compiled:
        state = {f"_orig_mod.{k}": v for k, v in state.items()}
    model_args = dict(
        n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.n_positions, bias=bias,
        vocab_size=50304 if padded else cfg.vocab_size, dropout=0.0,
    )  # fmt: skip
    return {"model": state, "optimizer": {"state": {}, "param_groups": []}, "model_args": model_args,
            "iter_num": 5000, "best_val_loss": torch.tensor(3.1), "config": {"batch_size": 12}}  # fmt: skip


def zero_biases(hf):
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
    return hf


@pytest.mark.parametrize(
    "compiled, bias, padded, flash", [(False, True, True, True), (True, False, True, False), (False, True, False, True)]
)
def test_a_nanogpt_checkpoint_loads_with_transformers_logits(compiled, bias, padded, flash, tmp_path):
    """Compiled or not, bias or not, padded vocabulary or not: the converted model's logits equal transformers'
    on the same weights (fp32, 1e-4)."""
    hf = make_hf_model(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=50257)
    if not bias:
        zero_biases(hf)
    path = tmp_path / "ckpt.pt"
    torch.save(nanogpt_checkpoint(hf, compiled=compiled, bias=bias, padded=padded, flash=flash), path)
    loaded = load_model(str(path))
    x = torch.randint(0, 50257, (2, 20))
    with torch.no_grad():
        assert torch.allclose(loaded.model.eval()(x)[0], hf(x).logits, rtol=0, atol=1e-4)


def test_a_nanogpt_checkpoint_exports_and_fine_tunes_but_does_not_resume(shakespeare_data, tmp_path):
    """A bias=False nanoGPT checkpoint exports to a transformers folder that computes the same logits; train.py
    starts a new run from it; resuming it is refused in one line that says what to do instead."""
    transformers = pytest.importorskip("transformers")
    from nanogpt2.hf.export import main as export_main

    hf = zero_biases(make_hf_model(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=50257))
    run = tmp_path / "nanogpt-run"
    run.mkdir()
    torch.save(nanogpt_checkpoint(hf, compiled=True, bias=False, padded=True, flash=True), run / "ckpt.pt")
    export_main([str(run / "ckpt.pt"), str(tmp_path / "hf")])
    back = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf")).eval()
    x = torch.randint(0, 50257, (2, 20))
    with torch.no_grad():
        assert torch.allclose(back(x).logits, hf(x).logits, rtol=0, atol=1e-4)
    common = ["--block_size=64", "--batch_size=2", "--max_iters=1", "--eval_interval=0", "--device=cpu"]
    out = tmp_path / "tuned"
    train([f"--init_from={run / 'ckpt.pt'}", f"--dataset={shakespeare_data}", f"--out_dir={out}", *common])
    assert (out / "ckpt.pt").is_file()
    with pytest.raises(UserError, match="was written by nanoGPT: its weights load, its optimizer state does not"):
        train([f"--out_dir={run}", "--init_from=resume", f"--dataset={shakespeare_data}", "--max_iters=2"])
