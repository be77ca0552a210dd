"""LoRA through train.py: adapters train on a frozen base, checkpoints are small and resume exactly, a changed
base is refused, and sample/export use the adapted model."""

from __future__ import annotations

import pytest
import torch

from nanogpt2.errors import UserError
from nanogpt2.loading import load_model
from nanogpt2.lora import merge_lora
from nanogpt2.model import GPT
from nanogpt2.model_config import lora_layers
from nanogpt2.train.metrics import read_metrics
from nanogpt2.train.trainer import train

from conftest import assert_resume_is_exact, make_hf_model, save_hf_dir


@pytest.fixture
def base(tmp_path):
    """A random-weight GPT-2 folder standing in for OpenAI's (the same loading path as init_from=gpt2)."""
    return save_hf_dir(
        make_hf_model(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=50257), tmp_path / "base"
    )


def lora_args(base, data, *extra):
    return [
        f"--init_from={base}",
        f"--dataset={data}",
        "--block_size=32",
        "--batch_size=2",
        "--device=cpu",
        "--compile=False",
        "--eval_iters=2",
        "--log_interval=1",
        "--lora_rank=4",
        "--lora_alpha=8",
        "--learning_rate=1e-2",
        "--warmup_iters=1",
        *extra,
    ]


def test_lora_run_trains_adapters_only_and_checkpoints_are_small(base, shakespeare_data, tmp_path):
    """A LoRA run lowers the loss, leaves every base weight bit-identical (the checkpoint's merged model minus
    its adapter update is the base), and its checkpoint is under 1/20 of a full fine-tune's."""
    out, full = tmp_path / "lora", tmp_path / "full"
    train(lora_args(base, shakespeare_data, f"--out_dir={out}", "--max_iters=6", "--eval_interval=6"))
    train(
        [*lora_args(base, shakespeare_data, f"--out_dir={full}", "--max_iters=1", "--eval_interval=1"), "--lora_rank=0"]
    )
    evals = read_metrics(out, "eval")
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    loaded = load_model(out / "ckpt.pt", keep_lora=True)
    model, ckpt = loaded.model, loaded.checkpoint
    assert set(ckpt["model"]) == {k for k in model.state_dict() if ".lora_" in k}
    original = GPT.from_pretrained(base, block_size=32).state_dict()
    for key, value in model.state_dict().items():
        if ".lora_" not in key:
            assert torch.equal(value, original[key]), key
    assert (out / "ckpt.pt").stat().st_size * 20 < (full / "ckpt.pt").stat().st_size


@pytest.mark.parametrize("targets", ["attn", "attn.c_attn,mlp.c_proj"])
def test_lora_resume_is_exact(base, shakespeare_data, tmp_path, targets):
    """4 steps straight equal 2 + resume + 2 for a LoRA run with dropout: bit-identical adapters and losses, for a
    named target set and a list of layers (whose adapters, and only those, the checkpoint holds)."""
    common = lora_args(
        base, shakespeare_data, "--eval_interval=2", "--lr_decay_iters=4", "--dropout=0.1", "--lora_dropout=0.1"
    )
    ckpt, _ = assert_resume_is_exact([*common, f"--lora_targets={targets}"], tmp_path, steps=4)
    layers = {key.split(".", 2)[2].rsplit(".lora_", 1)[0] for key in ckpt["model"]}
    assert layers == set(lora_layers(targets))


def test_resuming_against_a_changed_base_is_refused(base, shakespeare_data, tmp_path):
    """If the base folder's weights change after training, resuming (or loading) the LoRA run is refused."""
    out = tmp_path / "run"
    train(lora_args(base, shakespeare_data, f"--out_dir={out}", "--max_iters=1", "--eval_interval=1"))
    other = make_hf_model(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=50257, seed=1)
    save_hf_dir(other, base)  # same path, other weights
    with pytest.raises(UserError, match="trained on other weights"):
        train([f"--out_dir={out}", "--init_from=resume", "--max_iters=2"])


def test_sample_and_export_use_the_adapted_model(base, shakespeare_data, tmp_path):
    """Exporting a LoRA run writes the merged model (transformers' logits equal our unmerged model's to 1e-4);
    --peft writes an adapter folder; sample.py's loader returns the merged model."""
    from transformers import GPT2LMHeadModel

    from nanogpt2.hf.export import main as export_main

    out = tmp_path / "run"
    train(lora_args(base, shakespeare_data, f"--out_dir={out}", "--max_iters=3", "--eval_interval=3"))
    model = load_model(str(out), keep_lora=True).model
    x = torch.randint(0, 50257, (1, 16))
    with torch.no_grad():
        want = model.eval()(x)[0]
    export_main([str(out), str(tmp_path / "hf")])
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, want, atol=1e-4)
    export_main([str(out), str(tmp_path / "peft"), "--peft"])
    assert {p.name for p in (tmp_path / "peft").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    sampler = load_model(str(out)).model
    with torch.no_grad():
        assert torch.allclose(sampler.eval()(x)[0], merge_lora(model).eval()(x)[0], atol=1e-5)
    assert not any(".lora_" in k for k in sampler.state_dict())


def test_lora_needs_pretrained_weights():
    """lora_rank with init_from=scratch is one clear error (there is nothing to adapt)."""
    with pytest.raises(UserError, match="adapts pretrained weights"):
        train(["--init_from=scratch", "--lora_rank=4", "--device=cpu"])


def test_adding_lora_to_a_full_run_on_resume_is_refused(base, shakespeare_data, tmp_path):
    """Resuming a full fine-tune with lora_rank set is refused instead of silently training every weight."""
    out = tmp_path / "run"
    train(
        [*lora_args(base, shakespeare_data, f"--out_dir={out}", "--max_iters=1", "--eval_interval=1"), "--lora_rank=0"]
    )
    with pytest.raises(UserError, match="trained every weight"):
        train([f"--out_dir={out}", "--init_from=resume", "--max_iters=2", "--lora_rank=4"])
