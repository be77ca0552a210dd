"""The run header's lines about what is trained and how: what the loss counts and what attention sees (pair
data, documents), the optimizer and weights' settings, and the FLOPs per token that MFU counts.

describe_run (metrics.py) gives the header's first lines: the model, the data, the device.
"""

from __future__ import annotations

from collections.abc import Callable

from nanogpt2.data import Dataset
from nanogpt2.flops import lora_training_flops_per_token, muon_flops_per_step, training_flops_per_token
from nanogpt2.model import GPT
from nanogpt2.train.batches import masking
from nanogpt2.train.config import TrainConfig


def describe_loss(cfg: TrainConfig, data: Dataset, say: Callable[[str], None]) -> None:
    """Pair data and document options: say what the loss counts and what attention sees, before any figure."""
    if data.window is None:
        starts = "at an <|endoftext|> (a document's start)" if cfg.doc_aligned else "anywhere"
        sees = "its own document, from position 0" if cfg.doc_masking else "the whole window, across documents"
        if cfg.doc_aligned or cfg.doc_masking:
            say(f"documents: training windows start {starts}; each position attends to {sees}")
        return
    loss_mask, example_masking = masking(cfg)
    template = data.meta["loss_mask"]["template"]
    said = "masked: the mean over completions and their <|endoftext|>" if loss_mask else "every token (loss_mask=False)"
    sees = "its own example, from position 0" if example_masking else "the whole window (example_masking=False)"
    say(f"pair data ({template} template): the loss is {said}; each position attends to {sees}")


def describe_settings(
    cfg: TrainConfig, raw_model: GPT, lora: dict | None, say: Callable[[str], None], world_size: int = 1
) -> None:
    """The header's lines for the settings that change what the loss counts, how weights are held or updated,
    or a rate that never peaks."""
    if cfg.warmup_iters > cfg.max_iters and cfg.init_from != "resume":
        peak = cfg.learning_rate * cfg.max_iters / cfg.warmup_iters
        say(
            f"note: warmup_iters={cfg.warmup_iters} is longer than max_iters={cfg.max_iters}: the learning rate "
            f"climbs only to {peak:.2e} of its {cfg.learning_rate:.2e} by the last step"
        )
    if cfg.param_dtype == "bfloat16":
        rounding = "stochastic rounding" if cfg.stochastic_rounding else "round-to-nearest (updates may vanish)"
        say(f"parameters and gradients in bfloat16; 8-bit AdamW updates them with {rounding}")
    if cfg.optimizer_in_backward:
        say("each parameter is updated during backward and its gradient freed at once (compile stays off)")
    if cfg.optimizer == "muon":
        tokens = cfg.block_size * cfg.batch_size * cfg.gradient_accumulation_steps // world_size  # per process
        extra = muon_flops_per_step(raw_model.config) / (flops_per_token(cfg, raw_model, lora) * tokens)
        say(
            f"Muon (lr {cfg.muon_lr or cfg.learning_rate:.2e}) on the blocks' matrices, AdamW on the rest; MFU counts "
            f"the model's FLOPs only: Newton-Schulz adds {extra:.1%} to each process's step (nanogpt2/train/muon.py)"
        )
    if lora:
        trainable = sum(p.numel() for p in raw_model.parameters() if p.requires_grad)
        s = lora["settings"]
        say(
            f"LoRA rank {s['rank']} (alpha {s['alpha']}) on {s['targets']} of {lora['base']}: "
            f"{trainable / 1e6:.2f}M trainable parameters, base frozen in "
            f"{str(raw_model.wte.weight.dtype).removeprefix('torch.')}"
        )


def flops_per_token(cfg: TrainConfig, raw_model: GPT, lora: dict | None) -> int:
    """The matmul FLOPs one training token costs, as MFU counts them: a frozen base computes no weight gradients."""
    if lora:
        settings = lora["settings"]
        return lora_training_flops_per_token(raw_model.config, cfg.block_size, settings["rank"], settings["targets"])
    return training_flops_per_token(raw_model.config, cfg.block_size)
