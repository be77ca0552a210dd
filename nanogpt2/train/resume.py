"""Exact resume: what a training checkpoint holds beyond the weights, and putting it back.

A resumed run must continue as if it had never stopped: the same weights and
AdamW moments, the same learning-rate step, the same next batch, and the same
dropout masks. So a checkpoint (written by Trainer.save_checkpoint through
checkpoint.atomic_save) also holds every process's random generators and
batch-stream position, and the run's config. The file format itself (atomic
writes, reading, building a model from one) is in checkpoint.py.

    resume_config(argv)  -> (config, checkpoint): the saved settings under the command line's
    model_for_resume()   -> the checkpoint's model, after checking the config asks for the same one
    rng_state() / set_rng_state()
    restore_training()   -> optimizer, scaler, random state and batch position from the checkpoint
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from nanogpt2.common.configurator import parse_config
from nanogpt2.errors import UserError
from nanogpt2.loading import model_from_checkpoint, resolve_init_from
from nanogpt2.model import GPT
from nanogpt2.model_config import GPTConfig
from nanogpt2.train.checkpoint import BEST, read_checkpoint
from nanogpt2.train.config import TrainConfig
from nanogpt2.train.optim import lr_at
from nanogpt2.train.shards import load_shards, shards_folder


class RunComplete(Exception):
    """A resumed run has nothing left to do: it already reached max_iters. Not an error (exit status 0)."""


def resume_config(argv: Sequence[str] | None) -> tuple[TrainConfig, dict | None, list[str]]:
    """The run's config, the checkpoint to resume from (None unless init_from=resume), and notes to show.

    Layers, lowest first: defaults < the saved run's config < config files < --key=value,
    so a resumed run keeps its settings unless told otherwise."""
    argv = list(argv or [])
    cfg = parse_config(TrainConfig, argv)
    if cfg.init_from != "resume":
        return cfg, None, []
    path = resolve_init_from("resume", cfg.out_dir).path
    assert path is not None
    if not path.is_file():
        best = path.with_name(BEST)
        if best.is_file():  # resuming needs the latest state; best.pt is the best model, to start a new run from
            raise UserError(
                f"init_from=resume but {path} does not exist; {best} does, but the best checkpoint is for "
                f"sampling and exporting: start a new run from it with --init_from={best} and a new out_dir"
            )
        raise UserError(
            f"init_from=resume but {path} does not exist: point out_dir at the run to continue, "
            f"or start one with init_from=scratch or a GPT-2 name"
        )
    ckpt = read_checkpoint(path, weights=False)  # a sharded run's weights are loaded once sharded (restore_training)
    if ckpt.get("origin") == "nanoGPT":
        raise UserError(
            f"{path} was written by nanoGPT: its weights load, its optimizer state does not, so it cannot be "
            f"resumed here; start a new run from it with --init_from={path} (and a new out_dir)"
        )
    if ("optimizer" not in ckpt and "shards" not in ckpt) or "step" not in ckpt:
        raise UserError(f"{path} holds weights only (no optimizer state or step), so it cannot be resumed")
    saved = ckpt.get("config", {})
    cfg = parse_config(TrainConfig, argv, base=saved)
    was = saved.get("parallel", "ddp")
    if cfg.parallel != was:
        kind = "a folder of shards" if was == "fsdp" else "one file"
        raise UserError(
            f"the run in {cfg.out_dir} was trained with parallel={was}, whose checkpoint is {kind}: continue it "
            f"with parallel={was} (any number of processes), or start a new run from its weights with "
            f"--init_from={cfg.out_dir} and a new out_dir"
        )
    fused_before = saved.get("optimizer_in_backward", False)
    if cfg.optimizer_in_backward != fused_before:
        raise UserError(
            f"the run in {cfg.out_dir} was trained with optimizer_in_backward={fused_before}, whose optimizer "
            f"state is laid out differently; drop that setting"
        )
    if cfg.optimizer != saved.get("optimizer", "adamw"):
        raise UserError(
            f"the run in {cfg.out_dir} was trained with optimizer={saved.get('optimizer', 'adamw')}, "
            f"whose state cannot continue as optimizer={cfg.optimizer}; drop that setting"
        )
    step = int(ckpt["step"])
    if cfg.max_iters < step:
        raise UserError(
            f"max_iters={cfg.max_iters} is below the checkpoint's step {step} in {cfg.out_dir}: "
            f"to train further, pass --max_iters larger than {step}"
        )
    if cfg.max_iters == step and not cfg.eval_only:
        raise RunComplete(
            f"nothing to do: the run in {cfg.out_dir} already reached max_iters={step}; "
            f"to train further, pass --max_iters larger than {step} (files left unchanged)"
        )
    cfg, notes = _keep_schedule(cfg, saved, step)
    return cfg, ckpt, notes


def _keep_schedule(cfg: TrainConfig, saved: dict, step: int) -> tuple[TrainConfig, list[str]]:
    """A longer (or shorter) max_iters on resume would move the cosine decay (or wsd's cooldown) mid-run, and
    the learning rate would jump. Unless lr_decay_iters is set, keep the decay where the run started it."""
    old_max = saved.get("max_iters")
    if cfg.lr_schedule == "constant" or cfg.lr_decay_iters is not None or old_max in (None, cfg.max_iters):
        return cfg, []
    kept = replace(cfg, lr_decay_iters=old_max)
    min_lr = cfg.min_lr if cfg.min_lr is not None else cfg.learning_rate / 10

    def lr(decay_iters: int) -> float:
        return lr_at(
            step,
            learning_rate=cfg.learning_rate,
            min_lr=min_lr,
            warmup_iters=cfg.warmup_iters,
            decay_iters=decay_iters,
            schedule=cfg.lr_schedule,
            cooldown_frac=cfg.cooldown_frac,
        )

    now, moved = lr(old_max), lr(cfg.max_iters)
    decay = "cosine" if cfg.lr_schedule == "cosine" else "cooldown"
    change = f"note: max_iters {old_max} -> {cfg.max_iters}: the learning rate"
    fix = (
        f"Pass --lr_decay_iters={cfg.max_iters} to {'stretch the cosine' if decay == 'cosine' else 'move the cooldown'}"
    )
    if step < cfg.warmup_iters:  # the rate still climbs, whichever end the decay has
        where = f"still warming up: {now:.2e} now, {cfg.learning_rate:.2e} at step {cfg.warmup_iters}, then"
        return kept, [
            f"{change} is {where} the run's {decay}, which ends at step {old_max} (min_lr from then on). {fix} to "
            f"the new end instead"
        ]
    note = f"{change} keeps the run's schedule ({decay} to min_lr at step {old_max}, then min_lr; {now:.2e} now)."
    if decay == "cooldown" and moved > now:  # a wsd run past the start of its cooldown: moving it rewarms
        return kept, [
            f"{note} {fix}: the rate goes back up to {moved:.2e} and cools down again at the new end (WSD's "
            f"usual extension branches from a checkpoint taken before the cooldown)"
        ]
    return kept, [f"{note} {fix} instead ({moved:.2e} now)"]


def model_for_resume(cfg: TrainConfig, ckpt: dict, lora_base_dtype: torch.dtype | None = None) -> GPT:
    """The checkpoint's model, after checking that the config asks for the same architecture."""
    saved = GPTConfig(**ckpt["model_config"])
    asked = {
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_embd": cfg.n_embd,
        "block_size": cfg.block_size,
        "bias": cfg.bias,
        "pad_vocab_multiple": cfg.pad_vocab_multiple,
    }
    clashes = [
        f"{k}={v} (checkpoint: {getattr(saved, k)})"
        for k, v in asked.items()
        if v is not None and v != getattr(saved, k)
    ]
    if clashes:
        raise UserError(
            f"the checkpoint in {cfg.out_dir} is a different architecture: the config asks for "
            f"{', '.join(clashes)}; drop those settings or use a new out_dir"
        )
    if cfg.lora_rank and "lora" not in ckpt:
        raise UserError(
            f"the run in {cfg.out_dir} trained every weight, so it cannot continue with "
            f"lora_rank={cfg.lora_rank}; drop that setting, or start a LoRA run in a new out_dir"
        )
    if "lora" in ckpt:  # the base again (checked against its fingerprint), with the adapters
        adapters = ckpt["lora"]["settings"]
        wanted: dict[str, object] = {
            "rank": cfg.lora_rank,
            "alpha": cfg.lora_alpha,
            "dropout": cfg.lora_dropout,
            "targets": cfg.lora_targets,
        }
        if any(adapters[k] != v for k, v in wanted.items()):
            raise UserError(
                f"the run in {cfg.out_dir} has LoRA adapters {adapters}; the config asks for {wanted}: "
                f"drop the lora_* settings to continue it"
            )
    if "shards" in ckpt:  # random weights of the right shape, replaced by the shards once sharded (restore_training)
        return GPT(replace(saved, dropout=cfg.dropout))
    return model_from_checkpoint(ckpt, base_dtype=lora_base_dtype, dropout=cfg.dropout)


def rng_state(device: torch.device) -> dict:
    """Every random generator a training step touches: dropout on the CPU or GPU, and Python's.
    (Batches come from the loader's own counter-based stream, saved with its position.)"""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "python": random.getstate(),
    }


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    random.setstate(state["python"])


def restore_training(
    ckpt: dict,
    *,
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    train_batches: Any,
    dataset: str,
    rank: int,
    world_size: int,
    device: torch.device,
    say: Callable[[str], None],
    dropout_on: bool = False,
) -> tuple[int, float]:
    """Put the optimizer, loss scaler, random generators and batch position back; return (step, best val loss).

    The random generators are per process: they are restored exactly when the run has as many processes as
    the one that wrote the checkpoint (otherwise dropout's masks differ, said). The batch position is not:
    batch i of a step is batch i of the whole run's stream, whichever process draws it (data/loader.py), so
    the stream continues where it stopped on any number of processes. A sharded run (ckpt["shards"]) loads
    its weights and optimizer state from its folder into `model`, resharded to this run's processes."""
    if "shards" in ckpt:
        load_shards(shards_folder(path, ckpt), model, optimizer)
    else:
        optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    was = ckpt.get("config", {}).get("dataset")
    if was is not None and was != dataset:
        say(f"note: the checkpoint trained on dataset {was!r}; this run continues on {dataset!r}")
    saved, now = ckpt["loader"][0], train_batches.state_dict()
    if saved.get("packed_window") != now.get("packed_window"):  # plain text and pair data batch differently
        kinds = {None: "plain text"}
        was, is_ = (
            kinds.get(w, f"pair data in windows of {w}") for w in (saved.get("packed_window"), now.get("packed_window"))
        )
        raise UserError(
            f"the checkpoint trained on {was}, but dataset {dataset!r} is {is_}: their batches and losses differ, "
            f"so the run cannot continue on it; start a new run from this one (--init_from=RUN_DIR) instead"
        )
    keys = ("num_tokens", "batch_size", "block_size", "documents")  # documents: doc_aligned and doc_masking
    changed = [f"{k} {saved.get(k)} -> {now.get(k)}" for k in keys if saved.get(k) != now.get(k)]
    if changed:
        say(
            f"note: since the checkpoint, {', '.join(changed)} (training tokens, batch, block size or documents): "
            f"the batches will differ from an uninterrupted run"
        )
    written_by = int(ckpt.get("world_size", 1))
    if written_by == world_size:
        set_rng_state(ckpt["rng"][rank], device)
        train_batches.load_state_dict(ckpt["loader"][rank])
    else:  # each of the writers drew `step` batches: the whole run drew step x their number
        drawn = int(saved["step"]) * written_by
        train_batches.load_state_dict({**saved, "step": drawn // world_size})
        dropout = "; dropout's random masks will differ from an uninterrupted run's" if dropout_on else ""
        say(
            f"note: the checkpoint was written by {written_by} process(es) and this run has {world_size}: the "
            f"batches continue where the run stopped{dropout}"
        )
    return int(ckpt["step"]), float(ckpt["best_val_loss"])
