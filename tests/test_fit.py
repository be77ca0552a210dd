"""The --fit recipes' compute (nanogpt2/flops/fit.py), checked against the matmuls PyTorch actually runs.

The reference is torch.utils.flop_counter.FlopCounterMode over a real forward and backward pass of our
GPT with each recipe's settings (the model's checkpointing and chunked loss, nanogpt2.lora.apply_lora),
attention through SDPA's math backend so that its matmuls are counted (as in tests/test_flops.py).
Recomputation in backward happens under the counter too, so it is counted.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nanogpt2.flops.fit import Recipe, candidate_recipes, relative_compute
from nanogpt2.lora import apply_lora
from nanogpt2.model import GPT, GPTConfig

CONFIG = GPTConfig(n_layer=3, n_head=4, n_embd=64, block_size=64, vocab_size=97, pad_vocab_multiple=64)


def counted_flops(config: GPTConfig, recipe: Recipe, batch: int = 2, seq_len: int = 64) -> int:
    """Matmul FLOPs of one forward + backward pass of the model trained with `recipe`."""
    torch.manual_seed(0)
    model = GPT(config).train()
    model.checkpointing = recipe.checkpointing
    model.loss_chunk_tokens = recipe.loss_chunk_tokens
    if recipe.lora_rank:
        apply_lora(model, recipe.lora_rank, 2 * recipe.lora_rank, 0.0, recipe.lora_targets)
    idx, targets = (torch.randint(0, config.vocab_size, (batch, seq_len)) for _ in "xy")
    counter = FlopCounterMode(display=False)
    with sdpa_kernel([SDPBackend.MATH]), counter:
        model(idx, targets)[1].backward()
    return counter.get_total_flops()


RECIPES = [
    Recipe(),
    Recipe(checkpointing=True),
    Recipe(loss_chunk_tokens=48),
    Recipe(checkpointing=True, loss_chunk_tokens=48, optimizer="adamw8bit", param_dtype="bfloat16"),
    Recipe(lora_rank=4),
    Recipe(checkpointing=True, loss_chunk_tokens=48, lora_rank=4, lora_targets="all"),
]


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.describe())
def test_relative_compute_is_the_counted_ratio(recipe, dropout):
    """A recipe's compute relative to plain training is the ratio of the matmul FLOPs PyTorch runs, exactly:
    checkpointing adds the blocks' forward (without dropout, not the last matmul: the recompute stops early), a
    chunked loss the LM head's, LoRA drops the frozen weights' gradients."""
    config = dataclasses.replace(CONFIG, dropout=dropout)
    counted = counted_flops(config, recipe) / counted_flops(config, Recipe())
    assert relative_compute(config, 64, recipe) == pytest.approx(counted, rel=1e-12)


def test_candidates_are_the_combinations_training_accepts():
    """bf16 weights only with adamw8bit; the step in backward only without accumulation; LoRA only when fine-tuning."""
    everything = candidate_recipes()
    assert all(r.optimizer == "adamw8bit" for r in everything if r.param_dtype == "bfloat16")
    assert any(r.optimizer_in_backward for r in everything)
    assert not any(r.optimizer_in_backward for r in candidate_recipes(grad_accum=4))
    assert any(r.lora_rank for r in everything) and not any(r.lora_rank for r in candidate_recipes(lora=False))


def test_every_recipe_prints_settings_train_py_accepts():
    """The train.py settings --fit prints under each candidate recipe are accepted by train.py's own config (for
    a fine-tune of a GPT-2, as --fit assumes), and give back that recipe's memory settings."""
    from nanogpt2.common.configurator import parse_config
    from nanogpt2.train.config import TrainConfig

    for recipe in candidate_recipes():
        flags = [] if recipe.settings() == "(defaults)" else recipe.settings().split()
        cfg = parse_config(TrainConfig, ["--init_from=gpt2", *flags])
        for field in dataclasses.fields(Recipe):
            if field.name.startswith("lora_") and not recipe.lora_rank:
                continue  # no adapters: their settings mean nothing
            assert getattr(cfg, field.name) == getattr(recipe, field.name), (recipe, field.name)
