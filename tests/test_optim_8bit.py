"""optimizer=adamw8bit (torchao's AdamW8bit): it trains like fp32 AdamW, resumes exactly, and refuses clearly."""

from __future__ import annotations

import sys

import pytest
import torch

from nanogpt2.errors import UserError
from nanogpt2.train.checkpoint import read_checkpoint
from nanogpt2.train.metrics import read_metrics
from nanogpt2.train.trainer import train

from conftest import TINY_8BIT, assert_resume_is_exact

pytest.importorskip("torchao.optim", reason="optimizer=adamw8bit needs torchao (pip install 'nanogpt2[lowbit]')")

TINY = [*TINY_8BIT, "--learning_rate=3e-3"]


def evals(out):
    return read_metrics(out, "eval")


@pytest.mark.slow
def test_8bit_moments_train_like_fp32_adamw(shakespeare_data, tmp_path):
    """Same model, data and seed for 40 steps: 8-bit AdamW's validation loss ends within 0.02 nats of fp32
    AdamW's (both fall by more than 1 nat), and its quantized moments take under 0.3 of fp32's bytes."""
    runs = {}
    for kind in ("adamw", "adamw8bit"):
        out = tmp_path / kind
        train(
            [
                *TINY,
                f"--dataset={shakespeare_data}",
                f"--out_dir={out}",
                "--max_iters=40",
                "--eval_interval=40",
                f"--optimizer={kind}",
            ]
        )
        runs[kind] = evals(out)
    for kind, rows in runs.items():
        assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 1.0, kind
    assert abs(runs["adamw8bit"][-1]["val_loss"] - runs["adamw"][-1]["val_loss"]) < 0.02

    state = read_checkpoint(tmp_path / "adamw8bit" / "ckpt.pt")["optimizer"]["state"]
    quantized = [t for s in state.values() for k, t in s.items() if type(t).__name__ == "OptimState8bit"]
    assert quantized
    fp32_bytes = sum(4 * t.numel() for t in quantized)
    assert sum(_subclass_bytes(t) for t in quantized) < 0.3 * fp32_bytes  # 1 byte + block scales vs 4 bytes


def test_embeddings_keep_fp32_moments_and_matrices_get_8bit(shakespeare_data, tmp_path):
    """After a step, the token and position tables' moments are plain fp32 tensors and every other matrix of
    >= 4096 values has 8-bit moments (torchao's OptimState8bit)."""
    from nanogpt2.loading import load_model

    out = tmp_path / "run"
    train(
        [
            *TINY,
            f"--dataset={shakespeare_data}",
            f"--out_dir={out}",
            "--max_iters=1",
            "--eval_interval=1",
            "--optimizer=adamw8bit",
        ]
    )
    ckpt = read_checkpoint(out / "ckpt.pt")
    model = load_model(str(out / "ckpt.pt"), keep_lora=True).model
    params = [p for group in ckpt["optimizer"]["param_groups"] for p in group["params"]]
    named = dict(model.named_parameters())  # the optimizer's order is param_groups(): decay, then no decay
    from nanogpt2.train.optim import param_groups

    order = [p for group in param_groups(model, 0.1) for p in group["params"]]
    names = {id(t): n for n, t in named.items()}
    for index, p in zip(params, order):
        moment = ckpt["optimizer"]["state"][index]["exp_avg_sq"]
        name = names[id(p)]
        if name in ("wte.weight", "wpe.weight") or p.numel() < 4096:
            assert type(moment) is torch.Tensor and moment.dtype == torch.float32, name
        else:
            assert type(moment).__name__ == "OptimState8bit", name


def _subclass_bytes(t) -> int:
    """Bytes held by a tensor subclass (torchao's OptimState8bit: codes plus per-block scales)."""
    names, _ = t.__tensor_flatten__()
    return sum(getattr(t, n).numel() * getattr(t, n).element_size() for n in names)


@pytest.mark.slow
def test_8bit_resume_is_exact(shakespeare_data, tmp_path):
    """6 steps straight equal 3 + resume + 3 with 8-bit moments: bit-identical weights and losses."""
    common = [
        *TINY,
        f"--dataset={shakespeare_data}",
        "--eval_interval=3",
        "--lr_decay_iters=6",
        "--dropout=0.1",
        "--optimizer=adamw8bit",
    ]
    assert_resume_is_exact(common, tmp_path, steps=6)


def test_switching_optimizer_on_resume_is_refused(shakespeare_data, tmp_path):
    """A run trained with fp32 AdamW cannot continue as adamw8bit (the states differ): one clear error."""
    out = tmp_path / "run"
    train([*TINY, f"--dataset={shakespeare_data}", f"--out_dir={out}", "--max_iters=1", "--eval_interval=1"])
    with pytest.raises(UserError, match="trained with optimizer=adamw"):
        train([f"--out_dir={out}", "--init_from=resume", "--max_iters=2", "--optimizer=adamw8bit"])


def test_missing_torchao_is_one_clear_error(shakespeare_data, tmp_path, monkeypatch):
    """Without torchao installed, optimizer=adamw8bit says which package to install."""
    monkeypatch.setitem(sys.modules, "torchao", None)  # makes `import torchao...` raise ImportError
    monkeypatch.setitem(sys.modules, "torchao.optim", None)
    with pytest.raises(UserError, match=r"pip install 'nanogpt2\[lowbit\]'"):
        train([*TINY, f"--dataset={shakespeare_data}", f"--out_dir={tmp_path / 'x'}", "--optimizer=adamw8bit"])


@pytest.mark.parametrize("kind", ["adamw", "adamw8bit"])
def test_memory_model_counts_the_optimizer_state_exactly(kind):
    """nanogpt2.flops.memory's optimizer bytes equal the bytes of the real optimizer's moments after a step
    (fp32 AdamW, and 8-bit AdamW with its codes, block scales and code tables), and its parameter list is
    the model's."""
    from nanogpt2.flops.memory import optimizer_state_bytes, param_shapes
    from nanogpt2.model import GPT, GPTConfig
    from nanogpt2.train.optim import make_optimizer

    config = GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32, pad_vocab_multiple=64)
    model = GPT(config)
    assert sorted(param_shapes(config)) == sorted((n, tuple(p.shape)) for n, p in model.named_parameters())
    optimizer = make_optimizer(model, 1e-3, 0.1, (0.9, 0.95), "cpu", kind)
    x = torch.randint(0, 50257, (2, 32))
    model(x, x)[1].backward()
    optimizer.step()
    moments = [t for s in optimizer.state.values() for k, t in s.items() if k in ("exp_avg", "exp_avg_sq")]
    real = sum(_subclass_bytes(t) if type(t) is not torch.Tensor else t.numel() * t.element_size() for t in moments)
    assert optimizer_state_bytes(config, kind) == real


@pytest.mark.parametrize("recipe", ["finetune_large", "finetune_xl_full", "finetune_xl_lora"])
def test_12gb_recipes_run_a_step(shakespeare_data, tmp_path, recipe):
    """Each 12 GB recipe for the big GPT-2s (bf16 weights and 8-bit AdamW; checkpointing; LoRA on a bf16 base)
    trains a step on the CPU with its own settings, here on a small random-weight stand-in for the GPT-2 it
    names, loaded as a local folder, and its checkpoint records those settings."""
    from nanogpt2.common.configurator import read_config_file

    from conftest import REPO, make_hf_model, save_hf_dir

    base = save_hf_dir(
        make_hf_model(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=50257), tmp_path / "base"
    )
    out = tmp_path / "run"
    summary = train(
        [
            str(REPO / "config" / f"{recipe}.py"),
            f"--init_from={base}",
            f"--dataset={shakespeare_data}",
            f"--out_dir={out}",
            "--block_size=32",
            "--gradient_accumulation_steps=2",
            "--device=cpu",
            "--compile=False",
            "--max_iters=1",
            "--eval_iters=1",
            "--eval_interval=1",
        ]
    )
    assert summary["step"] == 1
    saved = read_checkpoint(out / "ckpt.pt")["config"]
    memory_settings = ("param_dtype", "optimizer", "checkpointing", "loss_chunk_tokens", "lora_rank", "lora_base_dtype")
    wanted = {k: v for k, v in read_config_file(REPO / "config" / f"{recipe}.py").items() if k in memory_settings}
    assert wanted and {k: saved[k] for k in wanted} == wanted
